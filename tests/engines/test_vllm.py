"""generation.backend=vllm: the vLLM worker (in .venv-vllm, `make install-vllm`) against the HF backend.

The slow tests start one engine (the testbed's thinking checkpoint) and send it every request, then
check that closing it leaves no process behind; the two that kill a process start their own. The fast ones need
no vLLM install.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.support import cli
from tests.support.paths import ROOT
from tests.support.shared import compose
from thinkswitch.config import SamplingConfig
from thinkswitch.validate import ConfigError

CPU = torch.device("cpu")


# -- fast: option checks, without vLLM -------------------------------------------------------------
@pytest.fixture
def fake_venv(tmp_path, monkeypatch):
    """A stand-in .venv-vllm: a python and the EngineArgs field list `make install-vllm` writes."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("")
    fields = {"max_model_len": ["int"], "gpu_memory_utilization": ["float"], "enforce_eager": ["bool"],
              "enable_prefix_caching": ["bool", "null"], "kv_cache_memory_bytes": ["int", "null"],
              "max_num_seqs": ["int", "null"], "dtype": ["str"], "model": ["str"], "compilation_config": ["any"],
              "tensor_parallel_size": ["int"], "enable_chunked_prefill": ["bool", "null"]}
    (tmp_path / "engine_args.json").write_text(json.dumps({"vllm_version": "0", "fields": fields}))
    monkeypatch.setenv("THINKSWITCH_VLLM_VENV", str(tmp_path))
    return tmp_path


def test_options_are_checked_against_engine_args(fake_venv):
    from thinkswitch.engines.vllm_options import check_vllm_options

    assert check_vllm_options({"max_model_len": 4096, "gpu_memory_utilization": 1, "enable_prefix_caching": None,
                               "kv_cache_memory_bytes": "4GB", "compilation_config": {"level": 0}}) == []
    errors = check_vllm_options({"max_num_seq": 4, "enforce_eager": "maybe", "model": "x",
                                 "kv_cache_memory_bytes": "lots"})
    assert len(errors) == 4
    assert errors[0].startswith("generation.vllm.max_num_seq: not an option") and "max_num_seqs" in errors[0]
    assert errors[1].startswith("generation.vllm.enforce_eager: expected bool")
    assert errors[2].startswith("generation.vllm.model: set by thinkswitch")
    assert errors[3].startswith("generation.vllm.kv_cache_memory_bytes")


def test_bad_engine_setting_fails_before_any_model_loads(fake_venv, monkeypatch):
    from thinkswitch.engines import vllm_backend
    from thinkswitch.validate import check_config

    cfg = compose(["generation.backend=vllm", "+generation.vllm.max_num_seq=4"])
    with pytest.raises(ConfigError, match=r"generation\.vllm\.max_num_seq: .*max_num_seqs"):
        check_config(cfg)

    def no_worker(*a, **k):
        raise AssertionError("a worker was started")

    monkeypatch.setattr(vllm_backend, "_Worker", no_worker)
    with pytest.raises(ConfigError, match=r"generation\.vllm\.max_num_seq"):
        vllm_backend.VLLMBackend.load("/nonexistent", model_cfg=cfg.model, device=CPU, gen_cfg=cfg.generation)


def test_missing_install_says_how_to_install(tmp_path, monkeypatch):
    from thinkswitch.validate import check_config

    monkeypatch.setenv("THINKSWITCH_VLLM_VENV", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="make install-vllm"):
        check_config(compose(["generation.backend=vllm"]))


def test_sampling_maps_like_hf_generate():
    from transformers import GenerationConfig

    from thinkswitch.engines.vllm_backend import effective_sampling

    ckpt = GenerationConfig(temperature=0.6, top_k=20, top_p=0.95)
    assert effective_sampling(SamplingConfig(max_new_tokens=7), ckpt) == {"max_tokens": 7, "temperature": 0.0}
    # unset fields: the checkpoint's generation_config, then transformers' defaults (top_k 50)
    assert effective_sampling(SamplingConfig(do_sample=True, temperature=1.0, min_p=0.05), ckpt) == {
        "max_tokens": 256, "temperature": 1.0, "top_p": 0.95, "top_k": 20, "min_p": 0.05}
    assert effective_sampling(SamplingConfig(do_sample=True), GenerationConfig())["top_k"] == 50


def test_context_check_names_the_numbers():
    from thinkswitch.engines.vllm_options import check_context

    jobs = [("generate", "model.sampling.thinking.max_new_tokens", 35, 96),
            ("evaluate instruct", "model.sampling.instruct.max_new_tokens", 40, 10)]
    config = {"max_position_embeddings": 512}
    assert check_context({"max_model_len": 131}, config, jobs) == []
    [error] = check_context({"max_model_len": 130}, config, jobs)
    assert error == ("generation.vllm.max_model_len=130 is shorter than generate's longest prompt (35 tokens) + "
                     "model.sampling.thinking.max_new_tokens (96) = 131 tokens; set it >= 131")
    assert check_context({"max_model_len": None}, config, jobs) == []  # the model's 512 positions hold it
    [error] = check_context({}, {"max_position_embeddings": 100}, jobs)
    assert error.startswith("the model's context (100 tokens: generation.vllm.max_model_len is unset)")
    assert error.endswith("lower model.sampling.thinking.max_new_tokens")
    stretched = {"max_position_embeddings": 100, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}}
    assert check_context({}, stretched, jobs) == []  # vLLM's own arithmetic decides a stretched context
    assert check_context({"max_model_len": -1}, config, jobs) == []  # -1: vLLM fits it to memory


def test_a_short_max_model_len_is_refused_before_any_engine_starts(fake_venv, tmp_path, monkeypatch, testbed_pair):
    from thinkswitch.data.domains import load_domain
    from thinkswitch.engines import vllm_backend
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.models import load_tokenizer
    from thinkswitch.setup import prepare
    from thinkswitch.store.paths import RunPaths

    def no_worker(*a, **k):
        raise AssertionError("a worker was started")

    monkeypatch.setattr(vllm_backend, "_Worker", no_worker)
    cfg = compose(["generation.backend=vllm", "generation.vllm.max_model_len=8"], run_dir=str(tmp_path / "run"))
    train, evaluation = load_domain(cfg.domain, cfg.model)
    tok = load_tokenizer(testbed_pair.thinking, cfg.model)
    need = max(len(tok(chat_prompt(tok, ex["prompt"], cfg.domain.system_prompt), add_special_tokens=False)
                   ["input_ids"]) for ex in train + evaluation) + cfg.model.sampling.thinking.max_new_tokens
    with pytest.raises(ConfigError, match=rf"generation\.vllm\.max_model_len=8 is shorter than .* = {need} tokens; "
                                          rf"set it >= {need}$"):
        prepare(cfg)
    assert not RunPaths(tmp_path / "run").run_config.exists(), "a refused start records nothing"
    with pytest.raises(ConfigError, match=rf"max_model_len={need - 1} is shorter"):
        prepare(compose(["generation.backend=vllm", f"generation.vllm.max_model_len={need - 1}"],
                        run_dir=str(tmp_path / "run")))
    prepare(compose(["generation.backend=vllm", f"generation.vllm.max_model_len={need}"],
                    run_dir=str(tmp_path / "run"))).close()
    run = prepare(compose(["generation.backend=vllm"], run_dir=str(tmp_path / "run2")))  # unset: the context needed
    assert run.generator.generation.vllm["max_model_len"] == need and run.engine.vllm["max_model_len"] is None
    run.close()


# -- slow: one engine on the testbed's thinking checkpoint ------------------------------------------
@pytest.fixture(scope="module")
def thinking(testbed_pair):
    from thinkswitch.engines.vllm_backend import VLLMBackend

    cfg = compose()
    backend = VLLMBackend.load(testbed_pair.thinking, model_cfg=cfg.model, device=CPU, gen_cfg=cfg.generation)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def questions():
    from thinkswitch.data.domains import load_domain

    cfg = compose(["domain.eval_size=256"])
    return load_domain(cfg.domain, cfg.model)[1]


@pytest.mark.slow
def test_greedy_matches_hf(thinking, testbed_pair, questions):
    from thinkswitch.data.grading import get_grader
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.hf import generate_texts
    from thinkswitch.engines.models import load_model
    from thinkswitch.stages.evaluate import final_answer

    cfg = compose()
    sampling = SamplingConfig(max_new_tokens=cfg.model.sampling.thinking.max_new_tokens)  # greedy
    prompts = [chat_prompt(thinking.tokenizer, q["prompt"], cfg.domain.system_prompt) for q in questions]
    ours = thinking.generate(prompts, sampling, seed=0, desc="vllm")
    model = load_model(testbed_pair.thinking, cfg.model, CPU)
    ref = generate_texts(model, thinking.tokenizer, prompts, sampling, 64, seed=0, desc="hf")
    assert len(ours) == len(ref) == len(questions) >= 200
    same = [a == b for a, b in zip(ours, ref)]  # output, tokens and stopped
    assert sum(same) / len(same) >= 0.95, f"{sum(same)}/{len(same)} identical"
    grader = get_grader(cfg.domain.grader)

    def accuracy(gens):
        return sum(bool(grader(final_answer(g["output"], "thinking"), q["answer"])[1])
                   for g, q in zip(gens, questions)) / len(questions)

    assert abs(accuracy(ours) - accuracy(ref)) <= 0.01
    assert accuracy(ours) > 0.8  # the testbed's thinking model solves its task
    assert all(g["stopped"] and "</think>" in g["output"] for g in ours[:20])


@pytest.mark.slow
def test_seeded_sampling_is_reproducible_with_n_samples(thinking, questions):
    from thinkswitch.engines.chat import chat_prompt

    # hot enough that the confident testbed model's samples differ (at 0.6 they rarely do)
    sampling = SamplingConfig(do_sample=True, temperature=1.5, top_p=0.95, top_k=40, min_p=0.01, max_new_tokens=64)
    prompts = [chat_prompt(thinking.tokenizer, q["prompt"]) for q in questions[:24]]
    first = thinking.generate(prompts, sampling, seed=7, n=3)
    assert len(first) == 3 * len(prompts)
    assert thinking.generate(prompts, sampling, seed=7, n=3) == first
    # the same request seeded alike answers alike whatever else is in the batch
    assert thinking.generate(prompts[:1], sampling, seed=7, n=3) == first[:3]
    assert thinking.generate(prompts, sampling, seed=8, n=3) != first
    per_prompt = [first[i:i + 3] for i in range(0, len(first), 3)]
    assert any(len({g["output"] for g in group}) > 1 for group in per_prompt), "n samples all identical"
    # more prompt tokens than one engine step takes (vLLM would prefill some in chunks, which fails on
    # CPU for seeded requests unless chunked prefill is off)
    everything = [chat_prompt(thinking.tokenizer, q["prompt"]) for q in questions]
    assert len(thinking.generate(everything, sampling, seed=3)) == len(everything)
    # short max_new_tokens: cut-off answers report stopped=False and count exactly the limit
    cut = thinking.generate(prompts[:4], SamplingConfig(max_new_tokens=5), seed=0)
    assert all(not g["stopped"] and g["tokens"] == 5 for g in cut)


@pytest.mark.slow
def test_outputs_stream_as_requests_finish_and_done_is_not_redone(thinking, questions):
    from thinkswitch.engines.chat import chat_prompt

    sampling = SamplingConfig(do_sample=True, temperature=1.5, top_p=0.95, max_new_tokens=64)
    prompts = [chat_prompt(thinking.tokenizer, q["prompt"]) for q in questions[:16]]
    batches: list[dict] = []
    full = thinking.generate(prompts, sampling, seed=5, n=2, on_batch=batches.append)
    assert len(batches) > 1, "results reach on_batch as requests finish, not all at the end"
    assert sorted(i for b in batches for i in b) == list(range(32))
    assert all(full[i] == r for b in batches for i, r in b.items())
    done = {i: full[i] for i in range(0, 32, 3)}  # a sample of some prompts: the rest of those prompts is missing
    again: list[dict] = []
    assert thinking.generate(prompts, sampling, seed=5, n=2, done=done, on_batch=again.append) == full
    assert sorted(i for b in again for i in b) == [i for i in range(32) if i not in done], "only the missing"
    assert thinking.generate(prompts, sampling, seed=5, n=2, done=dict(enumerate(full))) == full  # nothing to do


def _workers_tagged(tag: str) -> list[int]:
    """vLLM worker processes started by a test's subprocess (whose environment carries `tag`)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"vllm_worker" in (d / "cmdline").read_bytes() and \
                    tag.encode() in (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def _gone(pids: list[int], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in pids):
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
def test_killed_vllm_generation_resumes_with_only_the_missing_prompts(thinking, tmp_path, monkeypatch):
    """SIGKILL after the first finished requests reached the partial file; the rerun generates the rest only and
    ends with an uninterrupted run's outputs (reference and rerun use this module's engine, the killed run its own)."""
    from tests.support.faulty_stage import PROMPTS, SAMPLES, run_stage, stage_config
    from thinkswitch.engines.base import Generator
    from thinkswitch.store import partial
    from thinkswitch.store.io import read_jsonl

    cfg = stage_config("vllm")

    class Shared(Generator):
        @contextmanager
        def open(self, checkpoint):
            yield thinking

    shared = Shared(model=cfg.model, generation=cfg.generation, device=CPU)
    generated: list[int] = []
    monkeypatch.setattr(partial, "AFTER_BATCH", [lambda path, results: generated.extend(results)])
    total = PROMPTS["generate"] * SAMPLES["generate"]
    reference = run_stage("generate", tmp_path / "reference.jsonl", "vllm", shared)
    expected = read_jsonl(tmp_path / "reference.jsonl")
    assert sorted(generated) == list(range(total)) and reference["generate/resumed_outputs"] == 0
    assert len({r["output"] for r in expected}) > PROMPTS["generate"]  # sampled: varied

    out, tag = tmp_path / "run" / "generations.jsonl", uuid.uuid4().hex
    proc = subprocess.run([sys.executable, "-m", "tests.support.faulty_stage", "generate", str(out), "1", "vllm"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "THINKSWITCH_TEST_TAG": tag})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not out.exists()
    kept = len(partial.partial_path(out).read_text().splitlines()) - 1  # header + one line per finished result
    assert 0 < kept < total
    workers = _workers_tagged(tag)
    logs = [Path(os.readlink(f"/proc/{pid}/fd/2")) for pid in workers]  # its log: nobody is left to delete it
    assert _gone(workers, 60), "the killed run's vLLM worker exits by itself"
    for log in logs:
        log.unlink(missing_ok=True)

    generated.clear()
    metrics = run_stage("generate", out, "vllm", shared)
    assert len(generated) == total - kept, "only the missing prompts' samples were generated"
    assert metrics["generate/resumed_outputs"] == kept
    assert read_jsonl(out) == expected
    assert not partial.partial_path(out).exists()


@pytest.mark.slow
def test_closing_leaves_no_engine(thinking):
    worker = thinking.worker
    assert worker.alive()
    thinking.close()
    assert not worker.alive(), f"processes left: {worker.processes()}"
    assert worker.proc.returncode == 0
    assert "vllm" not in sys.modules
    thinking.close()  # idempotent


@pytest.mark.slow
def test_worker_errors_carry_the_workers_message(testbed_pair):
    """A setting only vLLM can judge (the model's own context length) fails with vLLM's words, on one line that
    names the worker's log, which is kept (with the traceback)."""
    from thinkswitch.engines.vllm_backend import VLLMBackend, WorkerError
    from thinkswitch.errors import StageError

    cfg = compose(["generation.vllm.max_model_len=100000"])  # the testbed model has 512 positions
    with pytest.raises(WorkerError, match=r"max_model_len \(100000\) is greater than") as err:
        VLLMBackend.load(testbed_pair.thinking, model_cfg=cfg.model, device=CPU, gen_cfg=cfg.generation)
    assert isinstance(err.value, StageError) and "\n" not in str(err.value)
    log = Path(re.search(r"its log: (\S+\.log)$", str(err.value)).group(1))
    assert "Traceback" in log.read_text()
    log.unlink()


@pytest.mark.slow
def test_a_dying_worker_is_one_line_naming_its_kept_log(testbed_pair, tmp_path):
    """`thinkswitch` on vLLM, its worker SIGKILLed once the engine is up (the stage is about to generate or
    generating): one error line naming the worker's log, which exists; no traceback; a non-zero exit."""
    proc = cli.start("generation.backend=vllm", "tracking.mode=disabled", "domain.eval_size=64",
                     "domain.train_prompts=16", "iterations=1", run_dir=tmp_path / "run")
    lines, worker = cli.on_vllm_ready(proc, lambda worker: os.kill(worker, signal.SIGKILL))
    out = "".join(lines)
    assert worker and proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    [error] = [line for line in lines if "error:" in line]
    assert re.search(rf"error: the vLLM worker \(pid {worker}\) was killed by signal 9; its log: \S+\.log", error)
    log = Path(re.search(r"its log: (\S+\.log)", error).group(1))
    assert log.is_file() and log.stat().st_size > 0
    log.unlink()
