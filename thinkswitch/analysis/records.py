"""What a run records: one row per iteration (metrics.jsonl, W&B), and summary.json at the end."""

from __future__ import annotations

import logging
from typing import Any, Optional

from thinkswitch.analysis.paired import change_metrics, paired_block, paired_run_summary
from thinkswitch.analysis.tracking import Tracker
from thinkswitch.config import ExperimentConfig, Role
from thinkswitch.store.io import read_jsonl, write_json, write_jsonl
from thinkswitch.store.paths import TRAIN_LOG, RunPaths
from thinkswitch.store.rundir import prune_checkpoints

log = logging.getLogger(__name__)

SCORES = ("correct", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "tokens_per_answer", "unfinished")


def record(cfg: ExperimentConfig, paths: RunPaths, k: int, metrics: dict, tracker: Tracker,
           history: list[dict]) -> None:
    """Iteration k's row: its metrics.json, a line of metrics.jsonl, W&B; then `keep_checkpoints` pruning."""
    it = paths.iteration(k)
    metrics = {**metrics, **stage_cost(metrics, cfg.cost.gpu_hour_usd), **change_metrics(paths.root, k)}
    row = {"iteration": k, **metrics}
    write_json(it.metrics, row)
    history.append(row)
    write_jsonl(paths.metrics, history)
    tracker.log(k, metrics)
    if (it.adapter / TRAIN_LOG).exists():
        tracker.log_training(k, read_jsonl(it.adapter / TRAIN_LOG))
    prune_checkpoints(cfg, paths, k)
    for role in Role:
        tracker.add_samples(k, role, read_jsonl(it.eval_results(role)), cfg.evaluate.samples_table)
    log.info("[%s] instruct %d/%d, thinking %d/%d", it.root.name, metrics["instruct/correct"],
             metrics["instruct/n"], metrics["thinking/correct"], metrics["thinking/n"])


def stage_cost(metrics: dict, gpu_hour_usd: Optional[float]) -> dict:
    """`cost/<stage>_usd` for every `time/<stage>` (seconds), at `gpu_hour_usd` per hour."""
    if gpu_hour_usd is None:
        return {}
    costs = {f"cost/{k[5:]}_usd": v / 3600 * gpu_hour_usd for k, v in metrics.items() if k.startswith("time/")}
    return {**costs, "cost/iteration_usd": sum(costs.values())}


def summarize(paths: RunPaths, history: list[dict], seconds: float, tracking_mode: str,
              gpu_hour_usd: Optional[float]) -> dict:
    """summary.json: baseline, final and delta of every score (with the paired statistics of each change),
    time and cost per stage, the history."""
    keys = [f"{r}/{m}" for r in Role for m in SCORES]
    first, last = history[0], history[-1]
    stage_seconds: dict[str, float] = {}
    for row in history:
        for k, v in row.items():
            if k.startswith("time/"):
                stage_seconds[k[5:]] = stage_seconds.get(k[5:], 0.0) + v
    return {
        "iterations": last["iteration"],
        "baseline": {k: first[k] for k in keys},
        "final": {k: last[k] for k in keys},
        "delta": {k: last[k] - first[k] for k in keys
                  if k.split("/")[1] in ("correct", "accuracy", "tokens_per_answer")},
        "wall_seconds": seconds,
        "stage_seconds": stage_seconds,
        "cost_usd": None if gpu_hour_usd is None else {
            **{stage: sec / 3600 * gpu_hour_usd for stage, sec in stage_seconds.items()},
            "total": seconds / 3600 * gpu_hour_usd},
        "paired": paired_block(paths.root, history),
        "tracking": tracking_mode,
        "history": history,
    }


def run_summary(summary: dict) -> dict[str, Any]:
    """What W&B's run summary holds: final scores, their deltas from iteration 0, total cost."""
    out = {**summary["final"], **{f"delta/{k}": v for k, v in summary["delta"].items()}}
    if summary["cost_usd"]:
        out["cost/total_usd"] = summary["cost_usd"]["total"]
    return out | paired_run_summary(summary)
