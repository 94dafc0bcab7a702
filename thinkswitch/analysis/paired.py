"""Paired changes of accuracy computed from a run's per-question files (iter_XX/eval_<role>.jsonl): per
iteration against the previous one (metrics.jsonl), and from iteration 0 to the last (summary.json, W&B).
"""

from __future__ import annotations

from pathlib import Path

from thinkswitch.analysis.stats import CHANGE_FIELDS, paired_change, question_scores
from thinkswitch.config import Role
from thinkswitch.store.io import read_jsonl
from thinkswitch.store.paths import RunPaths


def eval_scores(run_dir: Path, k: int, role: str) -> dict[str, float] | None:
    """id -> correctness (mean over samples) of `role` at iteration k, from iter_XX/eval_<role>.jsonl (or None)."""
    path = RunPaths(Path(run_dir)).iteration(k).eval_results(role)
    return question_scores(read_jsonl(path), str(path)) if path.is_file() else None


def _paired(run_dir: Path, before: int, after: int, role: str) -> dict | None:
    a, b = eval_scores(run_dir, before, role), eval_scores(run_dir, after, role)
    if a is None or b is None:
        return None
    try:
        return paired_change(a, b)
    except ValueError as e:
        raise ValueError(f"{run_dir}: iterations {before} and {after} of {role}: {e}") from None


def change_metrics(run_dir: Path, k: int) -> dict:
    """`<role>/change/<field>` for iteration k vs k-1 (flips_up, flips_down, delta, p_mcnemar, ci_low,
    ci_high), from the per-question files; {} for iteration 0 or when a file is missing."""
    out = {}
    for role in Role:
        c = _paired(run_dir, k - 1, k, role) if k > 0 else None
        if c:
            out |= {f"{role}/change/{f}": v for f, v in c.items() if f != "n"}
    return out


def paired_block(run_dir: Path, history: list[dict]) -> dict:
    """summary.json's `paired`: per checkpoint, the paired change of accuracy from iteration 0 to the last
    iteration of `history` ({before, after, n, flips_up, flips_down, delta, p_mcnemar, ci_low, ci_high})."""
    if not history:
        return {}
    first, last = history[0]["iteration"], history[-1]["iteration"]
    out = {}
    for role in Role:
        c = _paired(run_dir, first, last, role)
        if c:
            out[role] = {"before": first, "after": last, **c}
    return out


def paired_run_summary(summary: dict) -> dict:
    """The paired block flattened for W&B's run summary: `delta/<role>/<field>` (p_mcnemar, ci_low, ...)."""
    return {f"delta/{role}/{f}": v for role, c in (summary.get("paired") or {}).items()
            for f, v in c.items() if f in CHANGE_FIELDS and f != "n"}
