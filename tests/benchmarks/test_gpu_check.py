"""`make gpu-check` runs on a CPU at a tiny shape: every check writes its JSON line, cheapest first, none fails."""

import json
import os
import subprocess
import sys

import pytest

from tests.support.paths import CACHE, ROOT

pytestmark = pytest.mark.slow


def test_gpu_check_runs_on_cpu_at_a_tiny_shape(testbed_pair, tmp_path):
    out = tmp_path / "run.jsonl"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--scale", "tiny",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "THINKSWITCH_CACHE": str(CACHE), "OUT": str(tmp_path / "out"),
                               "THINKSWITCH_VLLM_VENV": str(tmp_path / "no-vllm")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (tmp_path / "out" / "gpu_check.jsonl").read_text() == out.read_text()  # and a copy in $OUT
    by = {r["check"]: r for r in rows}
    assert [r["check"] for r in rows] == ["env", "vllm_build", "validation", "cb_cache", "vllm_startup", "qlora_step",
                                          "loop", "build", "build", "distill", "merge", "generate", "cb", "cb",
                                          "cpu_merge", "nf4", "vllm", "paper", "done"]
    assert by["done"]["failed"] == [] and not [r for r in rows if "error" in r]
    assert by["env"]["device"] == "cpu" and by["env"]["versions"]["trl"]
    # the cheap rows: no vLLM here, validation leaves CUDA alone, cb's cache as planned under SDPA, one QLoRA step
    assert by["vllm_build"]["installed"] is False and by["vllm_startup"]["skipped"].startswith("no CUDA vLLM")
    assert by["validation"]["cuda_initialized_by_validation"] is False and by["validation"]["device"] == "cpu"
    assert by["cb_cache"]["attention"] == "sdpa" and by["cb_cache"]["built_blocks"] == by["cb_cache"]["planned_blocks"]
    assert by["qlora_step"]["steps"] == 1 and by["qlora_step"]["loss"] > 0
    assert by["paper"]["pair"].startswith("the random pair") and "experiment=paper_aime" in by["paper"]["overrides"]
    assert set(by["paper"]["stage_seconds"]) == {"merge", "evaluate"}  # method=merge_only: no trace closes
    for name in ("loop", "distill", "merge", "generate"):
        assert by[name]["seconds"] > 0 and by[name]["rss_peak_gib"] > 0 and by[name]["cuda_peak_gib"] is None
    assert set(by["loop"]["stage_seconds"]) == {"generate", "strip", "distill", "merge", "evaluate"}
    assert 0 <= by["loop"]["final"]["instruct/accuracy"] <= 1
    assert by["distill"]["trainer"] == "qlora" and by["distill"]["sft"]["gradient_accumulation_steps"] == 4
    assert by["distill"]["stage_metrics"]["train/steps"] == 3 and by["distill"]["tokens_per_s"] > 0
    assert by["merge"]["t"] == 0.3 and by["merge"]["stage_metrics"]["merge/seconds"] > 0
    gen = by["generate"]
    assert gen["prompts"] == 15 and gen["full_length"] == 15 and gen["tokens"] == 15 * 16 and gen["tokens_per_s"] > 0
    assert gen["backend"] == "hf" and gen["configured_backend"] == "auto" and gen["prompt_tokens"] > 0  # as it ran
    merge = by["cpu_merge"]  # the adapter merge on the CPU: timed, with its peak RSS, a checkpoint written
    assert merge["merge_device"] == "cpu" and merge["seconds"] > 0 and merge["rss_peak_gib"] > 0
    assert merge["written_bytes"] >= merge["params"] * 4  # float32 on a CPU (model.dtype=auto)
    assert merge["params"] == next(r["params"] for r in rows if r["check"] == "build" and r["model"] == "instruct")
    assert by["nf4"]["skipped"].startswith("CUDA memory only")  # a CPU run
    assert by["vllm"] == {"check": "vllm", "skipped": "not installed", "venv": str(tmp_path / "no-vllm")}
    cb = [r for r in rows if r["check"] == "cb"]
    assert [r["quantization"] for r in cb] == ["none", "nf4"] and cb[0]["dtype"] == "float32"
    for row in cb:  # every request ran to its own length; fp32 greedy on a CPU: identical to static batches
        assert row["full_length"] == 15 and row["tokens"] == sum(row["lengths"]) and len(set(row["lengths"])) > 3
        assert row["cb_over_static"] > 0 and row["cb_tokens_per_s"] > 0 and row["static"]["rss_peak_gib"] > 0
        assert row["longest"] == max(row["lengths"]) == row["static_steps"]  # 15 prompts: one static batch
    assert cb[0]["greedy_equal"] == 15
