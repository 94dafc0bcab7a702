"""Answer extraction and grading against literal strings, malformed ones included."""

import pytest

from thinkswitch.evaluate import final_answer
from thinkswitch.grading import GRADERS, get_grader, grade_last_integer, last_integer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("47", 47),
        ("The sum is 47.", 47),
        ("3 + 4 = 7, so 10", 10),
        ("answer: -5", -5),
        ("1,234 apples", 1234),
        ("x = 12\n\n", 12),
        ("0", 0),
        ("007", 7),
        ("no number here", None),
        ("", None),
        ("3.5", None),  # not an integer
        ("3.5 then 8", 8),
        ("v2 model says 9", 9),
        ("١٢", None),  # other scripts' digits are not read as integers
    ],
)
def test_last_integer(text, expected):
    assert last_integer(text) == expected


@pytest.mark.parametrize(
    "answer, gold, pred, correct",
    [
        ("47", "47", "47", True),
        ("The answer is 47", "47", "47", True),
        ("46", "47", "46", False),
        ("", "47", None, False),
        (None, "47", None, False),  # unfinished trace
        ("47", " 47\n", "47", True),
        ("47", "not a number", "47", False),
    ],
)
def test_grade_last_integer(answer, gold, pred, correct):
    assert grade_last_integer(answer, gold) == (pred, correct)


def test_unknown_grader_names_the_key():
    with pytest.raises(ValueError, match=r"domain.grader.*nope.*last_integer"):
        get_grader("nope")
    assert "last_integer" in GRADERS


@pytest.mark.parametrize(
    "output, role, expected",
    [
        ("1+2=3\n</think>\n\n3", "thinking", "3"),
        ("1+2=3", "thinking", None),  # unfinished: no answer, graded wrong
        ("3", "instruct", "3"),
        (" 3 \n", "instruct", "3"),
        ("</think>\n\n3", "instruct", "3"),  # an instruct model that emits an orphan close tag
    ],
)
def test_final_answer(output, role, expected):
    assert final_answer(output, role) == expected
