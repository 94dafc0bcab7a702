"""Wilson intervals and majority votes against hand-checked values."""

import pytest

from thinkswitch.stats import majority, wilson_interval


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
