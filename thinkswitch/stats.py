"""Small statistics for evaluation results: confidence intervals for accuracy and majority votes."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

log = logging.getLogger(__name__)


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for an accuracy of `correct` / `n` (95% for the default `z`); (0, 1) when n == 0.

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0/n or n/n,
    which matters for the small evaluation sets (30 AIME problems) used here.
    """
    if n < 0 or not 0 <= correct <= max(n, 0):
        raise ValueError(f"wilson_interval: need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact at the ends: rounding would otherwise leave a bound of 4e-19 above 0/n (or below n/n)
    return (0.0 if correct == 0 else centre - half), (1.0 if correct == n else centre + half)


def majority(values: Sequence[str | None]) -> tuple[str | None, int]:
    """The most common non-None value and its count, e.g. a majority vote over sampled answers.

    A tie for first place gives (None, the tied count): no majority. No non-None value gives (None, 0).
    The result depends only on the counts, not on the order of `values`.
    """
    counts = Counter(v for v in values if v is not None).most_common(2)
    if not counts:
        return None, 0
    if len(counts) == 2 and counts[0][1] == counts[1][1]:
        return None, counts[0][1]
    return counts[0]
