"""The run's console table (iteration x checkpoint, with the unfinished share when any output was cut off,
and the paired change per iteration), and the score and change formats the reports share:
`191/500 38.2% [34.0%, 42.5%]`, `+15.0 [+11.0, +19.2]* +90/-15`.
"""

from __future__ import annotations

from thinkswitch.analysis.stats import CHANGE_FIELDS, excludes_zero, wilson_interval
from thinkswitch.config import Role

SCORE_FIELDS = ("correct", "n", "accuracy", "ci_low", "ci_high", "tokens_per_answer")


def role_scores(row: dict | None, role: str) -> dict:
    """correct, n, accuracy, 95% Wilson interval (computed when the metrics predate it), tokens/answer."""
    if row is None or f"{role}/n" not in row:
        return dict.fromkeys(SCORE_FIELDS)
    c, n = row[f"{role}/correct"], row[f"{role}/n"]
    low, high = wilson_interval(c, n)
    return {"correct": c, "n": n, "accuracy": row.get(f"{role}/accuracy", c / n if n else 0.0),
            "ci_low": row.get(f"{role}/accuracy_ci_low", low), "ci_high": row.get(f"{role}/accuracy_ci_high", high),
            "tokens_per_answer": row.get(f"{role}/tokens_per_answer")}


def format_score(s: dict, width: str = "") -> str:
    """`191/500 38.2% [34.0%, 42.5%]` from `role_scores` fields; `width` pads the accuracy for tables."""
    return f"{s['correct']}/{s['n']} {s['accuracy']:{width}.1%} [{s['ci_low']:.1%}, {s['ci_high']:.1%}]"


def score(row: dict, role: str) -> str:
    """correct/n, accuracy and its 95% Wilson interval, from one line of metrics.jsonl."""
    return format_score(role_scores(row, role), width="6")


def format_change(c: dict | None, pad: bool = True) -> str:
    """`+15.0 [+11.0, +19.2]* +90/-15`: accuracy points, paired 95% interval (* if it excludes 0), flips;
    `pad` keeps a column for the mark when there is none (tables)."""
    if not c or c.get("delta") is None:
        return ""
    mark = "*" if excludes_zero(c) else " " if pad else ""
    return (f"{100 * c['delta']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]{mark} "
            f"+{c['flips_up']}/-{c['flips_down']}")


def _row_change(row: dict, role: str) -> dict | None:
    """The `<role>/change/*` metrics of one line of metrics.jsonl (vs the previous iteration), or None."""
    if f"{role}/change/delta" not in row:
        return None
    return {f: row.get(f"{role}/change/{f}") for f in CHANGE_FIELDS}


CHANGE_LEGEND = ("change: accuracy points vs the previous iteration [paired bootstrap 95% interval], +up/-down: "
                 "questions that flipped;\n* the interval excludes 0 (McNemar p-values: metrics.jsonl, summary.json)")


UNFINISHED_LEGEND = ("unfinished: share of outputs cut off by max_new_tokens or without an answer, graded wrong "
                     "(shown when any is)")


def iteration_table(history: list[dict], paired: dict | None = None) -> str:
    """Iteration x {instruct, thinking}: correct/n, accuracy [95% CI], tokens per answer, the share of unfinished
    outputs (when any output was) and, when the rows have them, the paired change from the previous iteration;
    `paired` (summary.json's block) adds a line per checkpoint for the change from iteration 0."""
    cells = [[score(row, r) for r in Role] for row in history]
    width = max(len(c) for row in cells for c in row)
    changes = [[format_change(_row_change(row, r)) for r in Role] for row in history]
    cw = max((len(c) for row in changes for c in row), default=0)
    unfinished = any(row.get(f"{r}/unfinished") for row in history for r in Role)
    extra = (" unfinished" if unfinished else "") + (f" {'change':<{cw}}" if cw else "")
    header = f"iter | {'instruct':<{width}} tok/ans{extra} | {'thinking':<{width}} tok/ans{extra}".rstrip()
    lines = [header, "-" * len(header)]
    for row, pair_cells, pair_changes in zip(history, cells, changes):
        halves = []
        for role, cell, change in zip(Role, pair_cells, pair_changes):
            share = f" {row.get(f'{role}/unfinished') or 0.0:10.1%}" if unfinished else ""
            halves.append(f"{cell:<{width}} {row[f'{role}/tokens_per_answer']:7.1f}{share}"
                          f"{f' {change:<{cw}}' if cw else ''}")
        lines.append(f"{row['iteration']:>4} | {halves[0]} | {halves[1]}".rstrip())
    finals = []
    after = ((paired or {}).get(Role.instruct) or {}).get("after", history[-1]["iteration"] if history else 0)
    for role in Role:
        c = (paired or {}).get(role)
        if c and c.get("delta") is not None and after != 0:  # iterations=0: nothing to compare with itself
            finals.append(f"{role} {format_change(c, pad=False)} (McNemar p={c['p_mcnemar']:.3g})")
    if finals:
        lines.append(f"iteration {after} vs 0: " + "; ".join(finals))
    if cw or finals:
        lines.append(CHANGE_LEGEND)
    if unfinished:
        lines.append(UNFINISHED_LEGEND)
    return "\n".join(lines)
