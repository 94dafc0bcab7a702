"""Wilson intervals, majority votes, paired changes and label metrics against hand-checked values and scipy."""

import math

import pytest

from thinkswitch.analysis.stats import (
    CHANGE_FIELDS,
    excludes_zero,
    label_shares,
    macro_f1,
    majority,
    mcnemar_exact,
    paired_change,
    question_scores,
    wilson_interval,
)


@pytest.mark.parametrize(
    "correct, n, low, high",
    [
        (0, 30, 0.0, 0.1135),
        (30, 30, 0.8865, 1.0),
        (15, 30, 0.3315, 0.6685),
        (1, 1, 0.2065, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_interval_known_values(correct, n, low, high):
    assert wilson_interval(correct, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_contains_the_estimate_and_narrows_with_n():
    for n in (1, 7, 30, 500):
        for correct in range(n + 1):
            low, high = wilson_interval(correct, n)
            assert 0.0 <= low <= correct / n <= high <= 1.0
    assert wilson_interval(250, 500)[1] - wilson_interval(250, 500)[0] < wilson_interval(15, 30)[1] - 0.5


def test_wilson_interval_z():
    narrow, wide = wilson_interval(15, 30, z=1.0), wilson_interval(15, 30, z=2.576)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]


def test_wilson_interval_empty_and_invalid():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for correct, n in [(-1, 5), (6, 5), (0, -1)]:
        with pytest.raises(ValueError, match="0 <= correct <= n"):
            wilson_interval(correct, n)


@pytest.mark.parametrize(
    "values, expected",
    [
        (["7", "7", "3"], ("7", 2)),
        (["3", "7", "7"], ("7", 2)),
        ([None, None, "5"], ("5", 1)),
        (["a", "b"], (None, 1)),  # a tie is no majority
        (["a", "b", "b", "a", "c"], (None, 2)),
        (["a", "b", "b", "a", "a"], ("a", 3)),
        ([None, None], (None, 0)),
        ([], (None, 0)),
        (["yes"] * 3 + [None] * 5, ("yes", 3)),  # None never wins, even when most common
    ],
)
def test_majority(values, expected):
    assert majority(values) == expected
    assert majority(list(reversed(values))) == expected  # order never matters


# --- paired changes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("up, down, p", [
    (0, 0, 1.0), (3, 3, 1.0), (5, 0, 0.0625), (0, 5, 0.0625), (10, 0, 2 / 1024),
    (1, 4, 2 * (1 + 5) / 32), (2, 8, 2 * (1 + 10 + 45) / 1024), (4, 5, 1.0),
])
def test_mcnemar_exact_hand_computed(up, down, p):
    assert mcnemar_exact(up, down) == pytest.approx(p, rel=1e-12)


def test_mcnemar_exact_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for up in range(0, 25, 3):
        for down in range(0, 25, 4):
            if up + down:
                expected = stats.binomtest(up, up + down, 0.5).pvalue
                assert mcnemar_exact(up, down) == pytest.approx(expected, rel=1e-9, abs=1e-15), (up, down)
    assert mcnemar_exact(3000, 2800) == pytest.approx(stats.binomtest(3000, 5800, 0.5).pvalue, rel=1e-6)
    with pytest.raises(ValueError, match="must be >= 0"):
        mcnemar_exact(-1, 2)


def _scores(values):
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def test_paired_change_counts_flips_and_delta():
    before = _scores([0, 0, 0, 1, 1, 1, 0, 1, 0, 0])
    after = _scores([1, 1, 1, 1, 0, 1, 0, 1, 1, 0])  # 4 up (q0, q1, q2, q8), 1 down (q4)
    change = paired_change(before, after)
    assert set(change) == set(CHANGE_FIELDS)
    assert (change["n"], change["flips_up"], change["flips_down"]) == (10, 4, 1)
    assert change["delta"] == pytest.approx(0.3)
    assert change["p_mcnemar"] == pytest.approx(mcnemar_exact(4, 1)) and change["p_mcnemar"] == pytest.approx(0.375)
    assert change["ci_low"] <= change["delta"] <= change["ci_high"]
    assert paired_change(before, after) == change  # seeded: the same interval every time


def test_paired_change_unchanged_and_empty():
    same = _scores([1, 0, 1, 1])
    change = paired_change(same, same)
    assert (change["flips_up"], change["flips_down"], change["delta"], change["p_mcnemar"]) == (0, 0, 0.0, 1.0)
    assert (change["ci_low"], change["ci_high"]) == (0.0, 0.0) and not excludes_zero(change)
    assert paired_change({}, {})["n"] == 0


def test_paired_change_ids_must_match():
    with pytest.raises(ValueError, match=r"only before: \['q3'\] \(1\), only after: \['x'\] \(1\)"):
        paired_change(_scores([1, 0, 1, 1]), {**_scores([1, 0, 1]), "x": 1.0})


def test_paired_interval_excludes_zero_for_a_clear_gain_only():
    gain = paired_change(_scores([0] * 60 + [1] * 40), _scores([1] * 30 + [0] * 30 + [1] * 40))
    assert gain["ci_low"] > 0 and excludes_zero(gain) and gain["p_mcnemar"] < 1e-8
    loss = paired_change(_scores([1] * 100), _scores([0] * 20 + [1] * 80))
    assert loss["ci_high"] < 0 and excludes_zero(loss)
    noise = paired_change(_scores([1, 0] * 50), _scores([0, 1] * 50))  # 50 up, 50 down
    assert noise["delta"] == 0 and noise["ci_low"] < 0 < noise["ci_high"] and not excludes_zero(noise)
    assert not excludes_zero(None) and not excludes_zero({"ci_low": None, "ci_high": None})


def test_paired_interval_width_matches_the_normal_approximation():
    import random

    rng = random.Random(3)
    before = {f"q{i}": float(rng.random() < 0.4) for i in range(500)}
    after = {i: float(rng.random() < 0.55) if rng.random() < 0.5 else v for i, v in before.items()}
    change = paired_change(before, after)
    diffs = [after[i] - before[i] for i in before]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / len(diffs))
    half = 1.959964 * sd / math.sqrt(len(diffs))
    assert change["ci_low"] == pytest.approx(mean - half, abs=0.006)
    assert change["ci_high"] == pytest.approx(mean + half, abs=0.006)


def test_paired_interval_agrees_with_scipy_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    import numpy as np

    rng = np.random.default_rng(0)
    before = rng.random(200) < 0.4
    after = np.where(rng.random(200) < 0.3, rng.random(200) < 0.7, before)
    change = paired_change(_scores(before), _scores(after))
    ref = stats.bootstrap((after.astype(float) - before,), np.mean, n_resamples=10000, method="percentile",
                          random_state=1).confidence_interval
    assert change["ci_low"] == pytest.approx(ref.low, abs=0.01)
    assert change["ci_high"] == pytest.approx(ref.high, abs=0.01)


def test_mean_correctness_is_the_unit_with_samples():
    rows = [{"id": "a", "sample": s, "correct": c} for s, c in enumerate([1, 0, 1, 1])]
    rows += [{"id": "b", "sample": s, "correct": False} for s in range(4)]
    assert question_scores(rows) == {"a": 0.75, "b": 0.0}
    later = question_scores([{"id": "a", "correct": c} for c in (1, 1, 0, 0)] +
                            [{"id": "b", "correct": c} for c in (0, 0, 0, 1)])
    change = paired_change(question_scores(rows), later)
    assert (change["flips_up"], change["flips_down"]) == (1, 1)  # b's mean went up, a's went down
    assert change["delta"] == pytest.approx(((0.5 - 0.75) + 0.25) / 2)
    with pytest.raises(ValueError, match=r"eval_x\.jsonl: row 1 has no `id` or `correct`"):
        question_scores([{"id": "a"}], "eval_x.jsonl")


# --- label metrics -----------------------------------------------------------------------------------------------

def test_macro_f1_hand_computed():
    golds = ["yes", "yes", "yes", "no", "no", "maybe"]
    preds = ["yes", "yes", "no", "no", None, "yes"]
    # yes: tp 2 fp 1 fn 1 -> 4/6; no: tp 1 fp 1 fn 1 -> 2/4; maybe: tp 0 -> 0
    assert macro_f1(golds, preds) == pytest.approx((4 / 6 + 0.5 + 0.0) / 3)
    assert macro_f1(["yes", "no"], ["yes", "no"]) == 1.0
    assert macro_f1(["yes"] * 4, ["yes"] * 4) == 1.0  # only the labels that occur count
    assert macro_f1([], []) == 0.0
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        macro_f1(["yes", "no"], ["yes"])


def test_macro_f1_punishes_always_yes_where_accuracy_does_not():
    golds = ["yes"] * 55 + ["no"] * 34 + ["maybe"] * 11
    always_yes = ["yes"] * 100
    assert sum(g == p for g, p in zip(golds, always_yes)) / 100 == 0.55
    assert macro_f1(golds, always_yes) == pytest.approx((2 * 55 / (2 * 55 + 45)) / 3)


def test_label_shares():
    assert label_shares(["yes", "no", "yes", "yes"], ("yes", "no", "maybe")) == {"yes": 0.75, "no": 0.25, "maybe": 0.0}
    assert label_shares([], ("yes",)) == {}
