"""What a rerun keeps and what it redoes, as a user runs `thinkswitch`: a run killed mid-evaluation keeps every
finished answer although this start's memory plan batches differently, and ends as an uninterrupted run does; a
stage whose input changed since it ran is redone, with the stages after it; `iterations=0` only evaluates the
starting pair. Asserted by outputs and markers."""

import os
import re
import shutil
import signal

import pytest

from tests.support import cli
from thinkswitch.store.digests import digest_outputs
from thinkswitch.store.io import read_json, read_jsonl, write_json
from thinkswitch.store.partial import partial_path
from thinkswitch.store.runner import content_id

pytestmark = pytest.mark.slow

ARGS = ["domain.train_prompts=16", "domain.eval_size=24", "generation.batch_size=8", "trainer.sft.num_train_epochs=1",
        "tracking.mode=disabled", "stage_cache=null"]  # stage_cache=null: the run directory alone decides


def run(run_dir, *extra, module=None):
    return cli.thinkswitch(*ARGS, *extra, run_dir=run_dir, module=module)


def run_low_memory(run_dir, free: int, kill_after: int, *extra):
    """A run on a machine with `free` bytes free (its memory plan binds: smaller batches), SIGKILLed after the
    `kill_after`-th batch of the baseline's thinking evaluation (0: not killed)."""
    return cli.thinkswitch(str(free), "iter_00/eval_thinking.jsonl.partial", str(kill_after), *ARGS, *extra,
                           run_dir=run_dir, module="tests.support.faulty_memory")


def test_iterations_0_evaluates_the_starting_pair_and_nothing_else(testbed_pair, tmp_path):
    proc = run(tmp_path, "iterations=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = read_json(tmp_path / "summary.json")
    assert summary["iterations"] == 0 and [row["iteration"] for row in summary["history"]] == [0]
    assert summary["final"] == summary["baseline"] and set(summary["stage_seconds"]) == {"evaluate"}
    assert [r["iteration"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0]
    assert sorted(p.name for p in tmp_path.glob("iter_*")) == ["iter_00"]
    assert sorted(p.name for p in (tmp_path / "iter_00").glob("*.done")) == ["evaluate_instruct.done",
                                                                             "evaluate_thinking.done"]
    assert len(read_jsonl(tmp_path / "iter_00" / "eval_thinking.jsonl")) == 24

    evaluated = markers(tmp_path / "iter_00")
    proc = run(tmp_path, "iterations=1")  # extended later: iteration 0 is reused
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert markers(tmp_path / "iter_00") == evaluated
    assert read_json(tmp_path / "summary.json")["iterations"] == 1
    assert (tmp_path / "iter_01" / "evaluate_thinking.done").exists()


def test_killed_mid_evaluation_keeps_its_answers_under_another_memory_plan(testbed_pair, tmp_path):
    weights = os.path.getsize(os.path.join(testbed_pair.thinking, "model.safetensors"))
    free = weights + (1 << 20)  # a KV budget of a few hundred tokens: thinking answers batched by 4, not 8
    hot = ("iterations=0", "model.sampling.thinking.temperature=1.5")  # answers that vary with the random numbers

    reference = tmp_path / "reference"
    proc = run_low_memory(reference, free, 0, *hot)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {role: (reference / "iter_00" / f"eval_{role}.jsonl").read_bytes() for role in ("instruct", "thinking")}

    plain = tmp_path / "plain"  # this machine's plan: batches of 8, so other random numbers per batch
    assert run(plain, *hot).returncode == 0
    assert (plain / "iter_00" / "eval_thinking.jsonl").read_bytes() != expected["thinking"], \
        "the test needs answers that depend on the batching"

    run_dir = tmp_path / "run"
    proc = run_low_memory(run_dir, free, 2, *hot)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    kept = len(partial_path(run_dir / "iter_00" / "eval_thinking.jsonl").read_text().splitlines()) - 1
    assert 0 < kept < 16, "two batches of the low-memory plan were finished (fewer than two of 8)"
    instruct_done = (run_dir / "iter_00" / "eval_instruct.jsonl").read_bytes()

    proc = run(run_dir, *hot)  # this machine's free memory: another KV budget
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert re.search(rf"eval_thinking\.jsonl\.partial: kept {kept} finished results", out), out[-3000:]
    assert "[iter_00] evaluate_instruct: done in an earlier run, skipped" in out, out[-3000:]  # its own stage
    for role in ("instruct", "thinking"):
        assert (run_dir / "iter_00" / f"eval_{role}.jsonl").read_bytes() == expected[role], role
    assert instruct_done == expected["instruct"]
    assert read_json(run_dir / "summary.json")["final"] == read_json(reference / "summary.json")["final"]
    assert not list(run_dir.rglob("*.partial"))


def markers(it):
    return {p.stem: (p.stat().st_mtime_ns, read_json(p)) for p in it.glob("*.done")}


def pretend_redone(it, stage: str, outputs: list[str]) -> None:
    """Rewrite `stage`'s marker as a redo that wrote the outputs now in `it` would have (a redo that is not
    bit-identical: another GPU kernel, another library version)."""
    info = read_json(it / f"{stage}.done")
    info["digests"] = digest_outputs(it, outputs)
    info["ids"] = {name: content_id(info["digests"], name) for name in outputs}
    write_json(it / f"{stage}.done", info)


def test_a_changed_input_redoes_the_stages_after_it(testbed_pair, tmp_path):
    proc = run(tmp_path, "iterations=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    it, base = tmp_path / "iter_01", tmp_path / "iter_00"
    before, baseline = markers(it), markers(base)
    merged = (it / "thinking" / "model.safetensors").read_bytes()
    trained = (it / "instruct" / "model.safetensors").read_bytes()

    # The instruct checkpoint replaced: distill's outputs no longer match its marker, so distill is redone; the
    # redo is bit-identical here (CPU), so what was built on it stays.
    shutil.rmtree(it / "instruct")
    shutil.copytree(testbed_pair.instruct, it / "instruct")
    proc = run(tmp_path, "iterations=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = markers(it)
    assert after["distill"][0] != before["distill"][0]
    assert (it / "instruct" / "model.safetensors").read_bytes() == trained
    kept = ("generate", "strip", "merge", "evaluate_instruct", "evaluate_thinking")
    assert {s: after[s] for s in kept} == {s: before[s] for s in kept}

    # A redo that gave other bytes (here: the starting instruct checkpoint): merge and evaluation are redone.
    shutil.rmtree(it / "instruct")
    shutil.copytree(testbed_pair.instruct, it / "instruct")
    pretend_redone(it, "distill", ["adapter", "instruct"])
    before = markers(it)
    proc = run(tmp_path, "iterations=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = markers(it)
    assert {s: after[s] for s in ("generate", "strip", "distill")} == {s: before[s] for s in
                                                                       ("generate", "strip", "distill")}
    assert markers(base) == baseline
    for stage in ("merge", "evaluate_instruct", "evaluate_thinking"):
        assert after[stage][0] != before[stage][0] and after[stage][1]["inputs"] != before[stage][1]["inputs"], stage
    assert (it / "thinking" / "model.safetensors").read_bytes() != merged
    # the instruct checkpoint is now the starting one: its evaluation is iteration 0's, answer for answer
    assert read_jsonl(it / "eval_instruct.jsonl") == read_jsonl(base / "eval_instruct.jsonl")
    history = read_json(tmp_path / "summary.json")["history"]
    assert history[1]["instruct/correct"] == history[0]["instruct/correct"]
    new_scores = after["evaluate_thinking"][1]["metrics"]
    assert history[1]["thinking/correct"] == new_scores["thinking/correct"]
