"""The whole loop, as a user runs it: `thinkswitch` on the testbed, one iteration, W&B offline (the session's
reference run, conftest.reference_run: 64 training prompts, 100 evaluation questions)."""

import shutil
import sys

import pytest
import torch

from tests.support import cli
from tests.support.checkpoints import tensors
from tests.support.shared import REFERENCE_ARGS, compose
from thinkswitch.store.io import read_json, read_jsonl
from thinkswitch.store.paths import Stage

slow = pytest.mark.slow
TRAIN, EVAL = 64, 100  # REFERENCE_ARGS' domain.train_prompts and domain.eval_size
assert f"domain.train_prompts={TRAIN}" in REFERENCE_ARGS and f"domain.eval_size={EVAL}" in REFERENCE_ARGS


@pytest.fixture(scope="module")
def finished_run(reference_run):
    """The reference run's directory and its console output."""
    return reference_run, (reference_run.parent / "console.txt").read_text()


@slow
def test_artifacts_of_every_stage(finished_run):
    run_dir, _ = finished_run
    for name in ("eval_instruct.jsonl", "eval_thinking.jsonl", "metrics.json", "evaluate_instruct.done",
                 "evaluate_thinking.done"):
        assert (run_dir / "iter_00" / name).exists(), name
    it = run_dir / "iter_01"
    for name in ("generations.jsonl", "pairs.jsonl", "eval_instruct.jsonl", "eval_thinking.jsonl",
                 "instruct/model.safetensors", "thinking/model.safetensors", "thinking/mergekit.yaml",
                 "adapter/adapter_model.safetensors", "metrics.json"):
        assert (it / name).exists(), name
    for stage in Stage:
        assert (it / f"{stage}.done").exists(), stage
    assert not list(run_dir.rglob("*.tmp")), "no temporary artifacts left behind"
    assert (run_dir / ".hydra" / "config.yaml").exists()


@slow
def test_labels_are_stripped_answers(finished_run):
    it = finished_run[0] / "iter_01"
    gens, pairs = read_jsonl(it / "generations.jsonl"), read_jsonl(it / "pairs.jsonl")
    assert len(gens) == TRAIN and 0 < len(pairs) <= TRAIN
    assert all("<think>" not in p["completion"] and "</think>" not in p["completion"] for p in pairs)
    metrics = read_json(it / "metrics.json")
    assert metrics["strip/pairs"] == len(pairs) and metrics["strip/dropped"] == len(gens) - len(pairs)


@slow
def test_metrics_match_the_per_question_results(finished_run):
    run_dir, _ = finished_run
    history = read_jsonl(run_dir / "metrics.jsonl")
    assert [h["iteration"] for h in history] == [0, 1]
    for row in history:
        for role in ("instruct", "thinking"):
            results = read_jsonl(run_dir / f"iter_{row['iteration']:02d}" / f"eval_{role}.jsonl")
            assert row[f"{role}/n"] == len(results) == EVAL
            assert row[f"{role}/correct"] == sum(r["correct"] for r in results)
            assert row[f"{role}/tokens_per_answer"] == pytest.approx(sum(r["tokens"] for r in results) / EVAL)
    # the thinking checkpoint writes traces: many more tokens per answer than the instruct one
    assert history[0]["thinking/tokens_per_answer"] > 3 * history[0]["instruct/tokens_per_answer"]
    summary = read_json(run_dir / "summary.json")
    assert summary["final"]["instruct/accuracy"] == history[-1]["instruct/accuracy"]
    assert summary["delta"]["thinking/correct"] == history[-1]["thinking/correct"] - history[0]["thinking/correct"]
    # paired changes: per iteration in metrics.jsonl, from iteration 0 in summary.json, from the same files
    for role in ("instruct", "thinking"):
        step, paired = history[1], summary["paired"][role]
        assert step[f"{role}/change/flips_up"] - step[f"{role}/change/flips_down"] == \
            step[f"{role}/correct"] - history[0][f"{role}/correct"]
        assert (paired["before"], paired["after"], paired["n"]) == (0, 1, EVAL)
        assert paired["delta"] == pytest.approx(summary["delta"][f"{role}/accuracy"])
        assert 0 < paired["p_mcnemar"] <= 1 and paired["ci_low"] <= paired["delta"] <= paired["ci_high"]


@slow
def test_instruct_weights_changed_and_thinking_is_a_merge(finished_run, testbed_pair):
    it = finished_run[0] / "iter_01"
    start, distilled, merged = tensors(testbed_pair.instruct), tensors(it / "instruct"), tensors(it / "thinking")
    assert any(not torch.equal(start[k], distilled[k]) for k in start)
    thinking = tensors(testbed_pair.thinking)
    assert any(not torch.equal(thinking[k], merged[k]) for k in thinking)


@slow
def test_wandb_offline_run_and_table(finished_run):
    run_dir, out = finished_run
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert "instruct" in out and "tok/ans" in out  # the results table
    assert "{'loss'" not in out and "'learning_rate'" not in out, "the trainer's log dicts stay off the console"
    log = (run_dir / "thinkswitch.log").read_text()
    assert "[thinkswitch.train]" in log and "'train_loss'" in log, "...and go to the log file"
    assert "iteration 1 vs 0: instruct" in out and "* the interval excludes 0" in out  # with paired changes


@slow
def test_rerun_in_the_same_directory_skips_finished_stages(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], run_dir)  # modification times kept
    before = read_json(run_dir / "summary.json")
    markers = {p: p.stat().st_mtime_ns for p in run_dir.glob("iter_*/*.done")}
    outputs = {p: p.stat().st_mtime_ns for p in run_dir.glob("iter_*/*.jsonl")}
    assert len(markers) == 8  # the baseline's two evaluations + 6 stages (evaluate_instruct, evaluate_thinking)
    proc = cli.thinkswitch(*REFERENCE_ARGS, run_dir=run_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert {p: p.stat().st_mtime_ns for p in markers} == markers, "no stage ran again"
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs, "no stage output was rewritten"
    after = read_json(run_dir / "summary.json")
    assert after["final"] == before["final"] and after["baseline"] == before["baseline"]


def test_library_heap_is_frozen_for_the_run_only():
    """run_experiment freezes the imported libraries' objects (cheap gc between stages), then unfreezes."""
    import gc

    from thinkswitch.loop import frozen_library_heap

    before = gc.get_freeze_count()
    with frozen_library_heap(compose(["method=merge_only"])):
        assert gc.get_freeze_count() > 100_000 and "mergekit.merge" in sys.modules
    assert gc.get_freeze_count() == before


def test_a_multiruns_jobs_keep_the_heap_frozen_and_still_collect_what_a_job_left():
    import gc
    import weakref

    from thinkswitch.loop import frozen_library_heap

    class Node:
        pass

    cfg = compose(["method=merge_only"])
    assert gc.get_freeze_count() == 0
    try:
        with frozen_library_heap(cfg, keep=True):
            frozen = gc.get_freeze_count()
        assert gc.get_freeze_count() > frozen // 2 > 50_000, "kept frozen after the job"
        cycle = Node()
        cycle.me = cycle  # garbage a job leaves behind, only a collection frees it
        gone = weakref.ref(cycle)
        del cycle
        with frozen_library_heap(cfg, keep=True):  # the next job
            assert gone() is None, "collected before the heap was frozen again"
    finally:
        gc.unfreeze()


def test_run_summary_holds_the_paired_tests():
    from thinkswitch.loop import run_summary

    paired = {"instruct": {"before": 0, "after": 2, "n": 30, "flips_up": 12, "flips_down": 2, "delta": 1 / 3,
                           "p_mcnemar": 0.013, "ci_low": 0.13, "ci_high": 0.5}}
    out = run_summary({"final": {"instruct/accuracy": 0.6}, "delta": {"instruct/accuracy": 1 / 3}, "cost_usd": None,
                       "paired": paired})
    assert out["instruct/accuracy"] == 0.6 and out["delta/instruct/accuracy"] == 1 / 3
    assert (out["delta/instruct/p_mcnemar"], out["delta/instruct/ci_low"], out["delta/instruct/flips_up"]) == \
        (0.013, 0.13, 12)


@slow
def test_outputs_cut_by_the_budget_are_unfinished_wrong_and_reported(testbed_pair, tmp_path):
    """The instruct model answers in 3 tokens: with one, every output is cut. None is graded (the last-integer
    fallback would read the first digit), each is wrong, and the share is in the metrics, summary and table."""
    proc = cli.thinkswitch("iterations=0", "domain.eval_size=10", "model.sampling.instruct.max_new_tokens=1",
                           "tracking.mode=disabled", "stage_cache=null", run_dir=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(tmp_path / "iter_00" / "eval_instruct.jsonl")
    assert len(rows) == 10 and all(r["tokens"] == 1 and not r["stopped"] for r in rows)
    assert not any(r["finished"] or r["correct"] for r in rows) and all(r["pred"] is None for r in rows)
    summary = read_json(tmp_path / "summary.json")
    assert summary["final"]["instruct/unfinished"] == 1.0 and summary["final"]["instruct/correct"] == 0
    assert summary["final"]["thinking/unfinished"] < 1.0 and summary["final"]["thinking/correct"] > 0
    table = (proc.stdout + proc.stderr).split("results (")[1]
    assert "unfinished" in table.splitlines()[1] and "100.0%" in table
