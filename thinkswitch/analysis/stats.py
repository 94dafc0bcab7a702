"""Small statistics for evaluation results: confidence intervals for accuracy (Wilson; a bootstrap over questions
for several samples per question), majority votes, paired changes (flips, McNemar's exact test, a paired bootstrap
interval) and label metrics (macro-F1)."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

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


# --- paired comparisons of two evaluations of the same questions ---------------------------------------------

CHANGE_FIELDS = ("n", "flips_up", "flips_down", "delta", "p_mcnemar", "ci_low", "ci_high")


def mcnemar_exact(up: int, down: int) -> float:
    """McNemar's exact test: the two-sided binomial p-value of `up` vs `down` discordant pairs under p=1/2.

    p = min(1, 2 * P[X <= min(up, down)]) for X ~ Binomial(up + down, 1/2); 1.0 when nothing flipped.
    """
    if up < 0 or down < 0:
        raise ValueError(f"mcnemar_exact: flip counts must be >= 0, got up={up}, down={down}")
    n, k = up + down, min(up, down)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))  # exact integers: no underflow for large n
    return min(1.0, 2 * tail / 2**n)


def paired_change(before: Mapping[str, float], after: Mapping[str, float], *, n_boot: int = 10000,
                  seed: int = 0) -> dict:
    """The change from `before` to `after`, two scorings of the same questions (id -> correctness in [0, 1]).

    A question's score is 0/1, or its mean correctness over samples (`evaluate.samples` > 1). Returns
    n, flips_up / flips_down (questions whose score rose / fell), delta (mean after - mean before),
    p_mcnemar (McNemar's exact test on the flips; for mean scores, the sign test on the questions that
    changed) and ci_low / ci_high (95% percentile interval of delta from `n_boot` paired bootstrap
    resamples of the questions, seeded by `seed`). The ids of the two must be the same.
    """
    missing, extra = sorted(set(before) - set(after)), sorted(set(after) - set(before))
    if missing or extra:
        raise ValueError(f"paired_change: the two evaluations must score the same questions; only before: "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)}), only after: "
                         f"{extra[:5]}{' ...' if len(extra) > 5 else ''} ({len(extra)})")
    if n_boot < 1:
        raise ValueError(f"paired_change: n_boot must be >= 1, got {n_boot}")
    ids = sorted(before)
    diffs = [float(after[i]) - float(before[i]) for i in ids]
    n = len(diffs)
    up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    delta = sum(diffs) / n if n else 0.0
    low, high = bootstrap_interval(diffs, n_boot, seed) if n else (0.0, 0.0)
    return {"n": n, "flips_up": up, "flips_down": down, "delta": delta, "p_mcnemar": mcnemar_exact(up, down),
            "ci_low": low, "ci_high": high}


def bootstrap_interval(diffs: Sequence[float], n_boot: int = 10000, seed: int = 0,
                       chunk: int = 1000) -> tuple[float, float]:
    """95% percentile interval of the mean of `diffs` (per-question values: paired differences, or the mean
    correctness of a question's samples) over `n_boot` resamples of them (with replacement), seeded by `seed`.
    Zero-width when every value is the same."""
    import numpy as np

    if not len(diffs) or n_boot < 1:
        raise ValueError(f"bootstrap_interval: need values and n_boot >= 1, got {len(diffs)} values, n_boot={n_boot}")

    d = np.asarray(diffs, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):  # bounded memory: chunk x n indices at a time
        size = min(chunk, n_boot - start)
        means[start:start + size] = d[rng.integers(0, len(d), size=(size, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    # the interval of a constant difference is that constant (floating sums would leave 1e-17 of noise)
    return (float(d[0]), float(d[0])) if np.all(d == d[0]) else (float(low), float(high))


def excludes_zero(change: Mapping[str, Any] | None) -> bool:
    """Whether a `paired_change` result's 95% interval lies wholly above or below 0 (a marked change)."""
    if not change or change.get("ci_low") is None or change.get("ci_high") is None:
        return False
    return change["ci_low"] > 0 or change["ci_high"] < 0


def question_scores(rows: Sequence[Mapping[str, Any]], source: str = "results") -> dict[str, float]:
    """id -> mean correctness over a question's samples, from per-question rows (`id`, `correct`)."""
    sums: dict[str, list[float]] = {}
    for i, row in enumerate(rows):
        if "id" not in row or "correct" not in row:
            raise ValueError(f"{source}: row {i + 1} has no `id` or `correct` (keys: {sorted(row)})")
        acc = sums.setdefault(str(row["id"]), [0.0, 0])
        acc[0] += float(bool(row["correct"]))
        acc[1] += 1
    return {i: total / count for i, (total, count) in sums.items()}


# --- label metrics (closed label sets, e.g. PubMedQA's yes / no / maybe) -------------------------------------

def macro_f1(golds: Sequence[str], preds: Sequence[str | None]) -> float:
    """Macro-F1 over the labels that occur in `golds` or `preds` (scikit-learn's `average="macro"`).

    A missing prediction (None) counts against its gold label's recall and is no label itself.
    A label's F1 is 0 when it has no true positive. 0.0 for no questions.
    """
    if len(golds) != len(preds):
        raise ValueError(f"macro_f1: {len(golds)} gold labels but {len(preds)} predictions")
    labels = sorted({*golds, *(p for p in preds if p is not None)})
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(golds, preds))
        fp = sum(g != label and p == label for g, p in zip(golds, preds))
        fn = sum(g == label and p != label for g, p in zip(golds, preds))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def label_shares(golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Share of each of `labels` among the gold labels (0.0 for an absent one); {} for no labels."""
    if not golds:
        return {}
    counts = Counter(golds)
    return {label: counts[label] / len(golds) for label in labels}
