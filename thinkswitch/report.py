"""Human-readable tables of a run's results."""

from __future__ import annotations

ROLES = ("instruct", "thinking")


def score(row: dict, role: str) -> str:
    """`191/500 38.2% [34.0, 42.6]`: correct/n, accuracy and its 95% Wilson interval."""
    c, n, acc = row[f"{role}/correct"], row[f"{role}/n"], row[f"{role}/accuracy"]
    return f"{c}/{n} {acc:6.1%} [{row[f'{role}/accuracy_ci_low']:.1%}, {row[f'{role}/accuracy_ci_high']:.1%}]"


def iteration_table(history: list[dict]) -> str:
    """Iteration x {instruct, thinking}: correct/n, accuracy [95% CI] and tokens per answer."""
    cells = [[score(row, r) for r in ROLES] for row in history]
    width = max(len(c) for row in cells for c in row)
    header = f"iter | {'instruct':<{width}} tok/ans | {'thinking':<{width}} tok/ans"
    lines = [header, "-" * len(header)]
    for row, (inst, think) in zip(history, cells):
        lines.append(f"{row['iteration']:>4} | {inst:<{width}} {row['instruct/tokens_per_answer']:7.1f} | "
                     f"{think:<{width}} {row['thinking/tokens_per_answer']:7.1f}")
    return "\n".join(lines)
