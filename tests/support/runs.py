"""What the tests read back from a run directory, and finished run directories made by hand (the report's tests)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from thinkswitch.analysis.stats import wilson_interval
from thinkswitch.store.io import read_json


def reused(run_dir) -> set[str]:
    """The stages a run restored from the stage cache (its `cache/<stage>` metrics)."""
    return {f"{m.parent.name}/{k.split('/')[1]}" for m in run_dir.glob("iter_*/metrics.json")
            for k in read_json(m) if k.startswith("cache/")}


def metrics_row(iteration: int, inst: tuple[int, int], think: tuple[int, int], ci: bool = True) -> dict:
    row = {"iteration": iteration, "time/evaluate": 1.5, "cost/iteration_usd": 0.25}
    for role, (c, n), tok in (("instruct", inst, 3.0), ("thinking", think, 48.0 + iteration)):
        row |= {f"{role}/correct": c, f"{role}/n": n, f"{role}/accuracy": c / n, f"{role}/tokens_per_answer": tok}
        if ci:
            lo, hi = wilson_interval(c, n)
            row |= {f"{role}/accuracy_ci_low": lo, f"{role}/accuracy_ci_high": hi}
    return row


def make_run(run: Path, overrides: dict, scores: list[tuple], finished: bool = True, failed: bool = False,
             iterations: int = 2) -> Path:
    """A run dir as thinkswitch leaves it; `scores` is [(instruct (c, n), thinking (c, n))] per iteration."""
    cfg = {"model": {"name": "testbed"}, "domain": {"name": "testbed", "train_prompts": 1024},
           "trainer": {"name": "lora"}, "merge": {"method": "slerp", "t": 0.1}, "iterations": iterations,
           "seed": 0, "run_dir": "${hydra:runtime.output_dir}"}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    history = [metrics_row(i, inst, think) for i, (inst, think) in enumerate(scores)]
    for i, pair in enumerate(scores):  # per-question results: questions 0..c-1 of n are the correct ones
        for role, (c, n) in zip(("instruct", "thinking"), pair):
            (run / f"iter_{i:02d}").mkdir(exist_ok=True)
            (run / f"iter_{i:02d}" / f"eval_{role}.jsonl").write_text(
                "".join(json.dumps({"id": f"q{q}", "sample": 0, "correct": q < c}) + "\n" for q in range(n)))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if finished:
        summary = {"iterations": len(history) - 1, "baseline": history[0], "final": history[-1], "delta": {},
                   "wall_seconds": 12.5, "stage_seconds": {"evaluate": 1.5 * len(history)},
                   "cost_usd": {"evaluate": 0.25 * len(history), "total": 0.25 * len(history)}, "history": history}
        (run / "summary.json").write_text(json.dumps(summary))
    if failed:
        (run / "failed.json").write_text(json.dumps({"error": "CUDA OOM", "stage": "distill", "iteration": 1}))
    return run


# final instruct correct (of 100) per (t, seed); baseline 40/100, thinking 90/100 -> 80 + 10 t
