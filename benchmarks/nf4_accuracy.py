"""The accuracy cost of 4-bit generation: two runs' iteration-0 evaluations (the starting pair), paired by question.

    python -m benchmarks.nf4_accuracy <run dir, fp32> <run dir, generation.quantization=nf4>

Prints, for the instruct and the thinking checkpoint, both accuracies and `analysis.stats.paired_change` (flips,
delta, McNemar's exact p, 95% paired-bootstrap interval) from the runs' `iter_00/eval_<role>.jsonl`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def scores(run: Path, role: str) -> dict[str, float]:
    from thinkswitch.store.io import read_jsonl

    rows = read_jsonl(run / "iter_00" / f"eval_{role}.jsonl")
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["id"], []).append(float(r["correct"]))
    return {i: sum(v) / len(v) for i, v in by.items()}


def main(argv: list[str]) -> None:
    from thinkswitch.analysis.stats import paired_change

    base, nf4 = Path(argv[0]), Path(argv[1])
    for role in ("instruct", "thinking"):
        a, b = scores(base, role), scores(nf4, role)
        c = paired_change(a, b)
        print(f"{role:<9} accuracy {sum(a.values()) / len(a):.3f} -> nf4 {sum(b.values()) / len(b):.3f}  "
              f"delta {c['delta']:+.3f} [95% CI {c['ci_low']:+.3f}, {c['ci_high']:+.3f}]  flips +{c['flips_up']} "
              f"-{c['flips_down']}  McNemar p {c['p_mcnemar']:.3g}  (n={c['n']})")


if __name__ == "__main__":
    main(sys.argv[1:])
