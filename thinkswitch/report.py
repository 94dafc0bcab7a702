"""Human-readable tables of a run's results."""

from __future__ import annotations


def iteration_table(history: list[dict]) -> str:
    """Iteration x {instruct, thinking}: correct/n, accuracy and tokens per answer."""
    header = f"{'iter':>4} | {'instruct':>16} {'tok/ans':>7} | {'thinking':>16} {'tok/ans':>7}"
    lines = [header, "-" * len(header)]
    for row in history:
        cells = []
        for role in ("instruct", "thinking"):
            c, n, acc = row[f"{role}/correct"], row[f"{role}/n"], row[f"{role}/accuracy"]
            cells.append(f"{f'{c}/{n} ({acc:.1%})':>16} {row[f'{role}/tokens_per_answer']:>7.1f}")
        lines.append(f"{row['iteration']:>4} | {cells[0]} | {cells[1]}")
    return "\n".join(lines)
