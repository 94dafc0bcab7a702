"""Answer extraction and grading against literal strings, malformed ones included."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.paths import SHARED_DATA
from thinkswitch.data.grading import (
    GRADERS,
    boxed_integer,
    canonical_answer,
    get_grader,
    gold_format,
    grade_boxed_integer,
    grade_last_integer,
    grade_math_verify,
    grade_yes_no_maybe,
    last_boxed,
    last_integer,
    read_gold,
    yes_no_maybe,
)
from thinkswitch.stages.evaluate import final_answer


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


def test_last_integer_never_converts_a_huge_number():
    assert last_integer("9" * 5000) is None  # Python's int() refuses strings this long
    assert grade_last_integer("9" * 5000, "9") == ("9" * 5000, False)


# --- \boxed{} ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\boxed{42}", "42"),
        (r"so the answer is $\boxed{42}$.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{a{b{c}}d}", "a{b{c}}d"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed {7}", "7"),  # space before the brace is still LaTeX
        (r"\boxed{}", ""),
        (r"\boxed{", None),
        (r"\boxed{12", None),
        (r"\boxed{1} then \boxed{2", "1"),  # the last one is unbalanced: the previous one
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are not braces
        (r"\boxed 5", None),
        (r"\boxed5", None),
        (r"\boxedx{5}", None),
        (r"\fbox{5}", None),
        (r"\boxed{\boxed{3}}", "3"),  # the last one to open
        (r"} } \boxed{4} {", "4"),  # stray braces around do not matter
        ("", None),
        (None, None),
        ("no box here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "content, expected",
    [
        ("42", "42"),
        ("033", "33"),
        ("000", "0"),
        ("1,000", "1000"),
        ("1{,}000", "1000"),
        (r"1\,000", "1000"),
        (r"\text{042}", "42"),
        (r"\text{ 42 }", "42"),
        (r"\textbf{\text{42}}", "42"),
        (r"\mathrm{42}", "42"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        ("$42$", "42"),
        (" 4 2 ", "42"),
        ("{42}", "42"),
        ("{{42}}", "42"),
        ("-5", "-5"),
        ("\u22125", "-5"),  # Unicode minus
        ("", None),
        ("x", None),
        ("x = 42", None),  # the box must hold the integer alone
        ("42.5", None),
        ("4.0", None),
        ("1,00", None),
        (r"\frac{1}{2}", None),
        ("10^{3}", None),
        ("{4}{2}", None),
        ("\u0664\u0662", None),  # other scripts' digits are not read
    ],
)
def test_boxed_integer(content, expected):
    assert boxed_integer(content) == expected


@pytest.mark.parametrize(
    "answer, gold, pred, correct",
    [
        (r"\boxed{277}", "277", "277", True),
        (r"The answer is $\boxed{277}$.", "277", "277", True),
        (r"\boxed{033}", "33", "33", True),
        (r"\boxed{33}", "033", "33", True),
        (r"\boxed{\text{042}}", "42", "42", True),
        (r"\boxed{ 42 }", "42", "42", True),
        (r"$\boxed{1{,}000}$", "0", "1000", False),  # valid AIME answers are 0-999
        (r"\boxed{1,000}", "1000", "1000", False),
        (r"\boxed{999}", "999", "999", True),
        (r"\boxed{0}", "0", "0", True),
        (r"\boxed{-5}", "5", "-5", False),
        (r"\boxed{-0}", "0", "0", True),
        (r"\boxed{12} is wrong, it is \boxed{13}", "13", "13", True),
        (r"\boxed{13} ... wait, \boxed{12}", "13", "12", False),  # the last box counts
        (r"\boxed{}", "0", None, False),
        (r"\boxed{x}", "5", None, False),
        (r"\boxed{\frac{1}{2}}", "2", None, False),  # a box with no integer: wrong, no fallback
        (r"so 5 \boxed{m+n}", "5", None, False),
        (r"\boxed{", "1", None, False),
        (r"The answer is 12, \boxed{12", "12", "12", True),  # unbalanced: no box, fall back to the last integer
        ("The answer is 47.", "47", "47", True),  # no box: the last integer
        ("x = -3", "3", "-3", False),
        ("first 12 then 1234", "234", "1234", False),
        ("no answer", "1", None, False),
        ("", "1", None, False),
        (None, "1", None, False),
        (r"\boxed{42}", 42, "42", True),  # gold as an int (aime24/25 store ints)
        (r"\boxed{42}", " 42\n", "42", True),
        (r"\boxed{42}", "not a number", "42", False),
        (r"\boxed{" + "9" * 5000 + "}", "9", "9" * 5000, False),  # no int() on huge numbers
    ],
)
def test_grade_boxed_integer(answer, gold, pred, correct):
    assert grade_boxed_integer(answer, gold) == (pred, correct)


def test_every_aime26_gold_answer_grades_correct_when_boxed():
    records = [json.loads(line) for line in (SHARED_DATA / "aime" / "aime26.jsonl").read_text().splitlines() if line]
    assert len(records) == 30
    for r in records:
        answer = f"Adding up, we get {int(r['answer']) + 1} - 1.\n\nThe final answer is $\\boxed{{{r['answer']}}}$."
        assert grade_boxed_integer(answer, r["answer"]) == (str(int(r["answer"])), True)
        assert grade_boxed_integer(canonical_answer("boxed_integer", r["answer"]), r["answer"])[1]


# --- yes / no / maybe --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "answer, pred",
    [
        ("yes", "yes"),
        ("No.", "no"),
        ("MAYBE", "maybe"),
        ("**Yes**", "yes"),
        ("__No__, the data do not show it.", "no"),
        ("- Maybe: the evidence is mixed.", "maybe"),
        ("The answer is: **no**.", "no"),
        ("The answer is no.", "no"),
        ("Final answer: maybe", "maybe"),
        ("**Final answer**: Yes", "yes"),
        ("**Answer:** no", "no"),
        ("Answer: Maybe", "maybe"),
        ("The answer to whether statins help is yes.", "yes"),
        ("Yes, because the trial showed it, but maybe not in children.", "yes"),  # the first word
        ("No. Although some say yes, the answer is maybe.", "maybe"),  # an explicit statement wins
        ("There is no clear evidence, so I would say yes", "yes"),  # the last standalone word
        ("Noted. The data support it: yes.", "yes"),  # `Noted` is not `no`
        ("Nobody knows; yesterday's results say nothing.", None),
        ("There is some evidence. Therefore, maybe.", "maybe"),
        (r"\boxed{no}", "no"),
        (r"It could be yes; \boxed{\text{Maybe}}", "maybe"),  # the box wins
        (r"\boxed{C} so yes", "yes"),  # a box without a label: the next rule
        ("The study says YES", "yes"),
        ("I'm not sure.", None),
        ("", None),
        (None, None),
        ("NO", "no"),
        ("oui", None),
        ("yes\u00e9", None),  # Unicode letters count as part of the word
    ],
)
def test_yes_no_maybe(answer, pred):
    assert yes_no_maybe(answer) == pred


@pytest.mark.parametrize(
    "answer, gold, pred, correct",
    [
        ("Yes.", "yes", "yes", True),
        ("Yes.", "YES ", "yes", True),
        ("no", "yes", "no", False),
        ("The answer is maybe", "maybe", "maybe", True),
        ("unclear", "maybe", None, False),
        (None, "yes", None, False),
        ("yes", "perhaps", "yes", False),
    ],
)
def test_grade_yes_no_maybe(answer, gold, pred, correct):
    assert grade_yes_no_maybe(answer, gold) == (pred, correct)


def test_every_pubmedqa_gold_label_grades_correct_as_an_answer_sentence():
    records = json.loads((SHARED_DATA / "pubmedqa" / "ori_pqal.json").read_text())
    for pubid, r in records.items():
        gold = r["final_decision"]
        for answer in (f"{r['LONG_ANSWER']}\n\nThe answer is: **{gold.capitalize()}**.",
                       f"{gold.capitalize()}. {r['LONG_ANSWER']}",
                       canonical_answer("yes_no_maybe", gold)):
            assert grade_yes_no_maybe(answer, gold) == (gold, True), (pubid, answer[-200:])


# --- canonical answers and the registry --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "grader, pred, expected",
    [
        ("boxed_integer", "33", r"\boxed{33}"),
        ("boxed_integer", "033", r"\boxed{33}"),
        ("yes_no_maybe", "Yes", "yes"),
        ("yes_no_maybe", "no", "no"),
        ("last_integer", "-07", "-7"),
        ("last_integer", "12", "12"),
        ("last_integer", "x", "x"),  # never raises on a string
    ],
)
def test_canonical_answer(grader, pred, expected):
    assert canonical_answer(grader, pred) == expected


@pytest.mark.parametrize("name", sorted(GRADERS))
def test_canonical_answer_grades_correct(name):
    gold = {"boxed_integer": "7", "yes_no_maybe": "maybe", "last_integer": "7", "math_verify": "\\frac{7}{2}"}[name]
    pred, correct = get_grader(name)(canonical_answer(name, gold), gold)
    assert correct and canonical_answer(name, pred) == canonical_answer(name, gold)


def test_new_graders_are_registered():
    assert get_grader("boxed_integer") is grade_boxed_integer
    assert get_grader("yes_no_maybe") is grade_yes_no_maybe
    with pytest.raises(ValueError, match="unknown grader 'nope'"):
        canonical_answer("nope", "1")


# --- properties --------------------------------------------------------------------------------------------------

_PIECES = ["\\boxed{", "\\boxed", "{", "}", "\\", "\\{", "\\text{", "{,}", " ", "42", "7", "1,000", "-", "$",
           "^\\circ", "yes", "No", "MAYBE", "**", "_", ".", "\n", "answer is", "Final answer:", "\u00e9"]
_LATEXY = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=3)), max_size=40).map("".join)


@pytest.mark.parametrize("name", sorted(GRADERS))
@settings(deadline=None)  # math-verify's first call imports sympy
@given(answer=st.one_of(st.none(), st.text(max_size=300), _LATEXY), gold=st.text(max_size=10))
def test_graders_never_raise(name, answer, gold):
    pred, correct = GRADERS[name](answer, gold)
    assert isinstance(correct, bool)
    assert pred is None or isinstance(pred, str)
    if pred is not None:
        assert isinstance(canonical_answer(name, pred), str)


@given(prefix=_LATEXY, value=st.integers(0, 999))
def test_a_final_box_decides_whatever_comes_before(prefix, value):
    answer = prefix + f"\n\nFinal answer: $\\boxed{{{value}}}$"
    assert grade_boxed_integer(answer, str(value)) == (str(value), True)


@given(prefix=_LATEXY, label=st.sampled_from(["yes", "no", "maybe"]))
def test_a_final_boxed_label_decides_whatever_comes_before(prefix, label):
    answer = prefix + f"\n\n\\boxed{{{label.capitalize()}}}"
    assert grade_yes_no_maybe(answer, label) == (label, True)


HUGE = [lambda n: "\\boxed{" * n, lambda n: "{" * (2 * n) + "\\boxed{7}", lambda n: "answer to " * (n // 2) + "yes",
        lambda n: "1," * n + ".5", lambda n: "no " * n + "\\boxed{" + "}" * 1000]


@pytest.mark.parametrize("make", HUGE, ids=["open-boxes", "open-braces", "words", "commas", "closing-braces"])
def test_huge_inputs_take_time_linear_in_their_length(make):
    """Pathological answers (a model looping on one token) are graded in time linear in their length, not
    quadratic: 8x the text takes well under 64x the time (a ratio measured in this run, not a time limit)."""
    import time

    def seconds(n: int, repeats: int) -> float:
        best = float("inf")
        for _ in range(repeats):
            text, start = make(n), time.perf_counter()
            for grader in GRADERS.values():
                grader(text, "7")
            best = min(best, time.perf_counter() - start)
        return best

    seconds(100, 1)  # imports and first-call set-up (math-verify's) out of the measure
    small, large = seconds(6_250, 3), seconds(50_000, 1)  # the best of 3: the small one is the noisier
    assert large / max(small, 1e-3) < 32, f"{large:.3f} s for 8x the text of {small:.3f} s"


# --- math-verify -------------------------------------------------------------------------------------------------

def _aime26():
    return [json.loads(line) for line in (SHARED_DATA / "aime" / "aime26.jsonl").read_text().splitlines() if line]


def test_math_verify_agrees_with_boxed_integer_on_aime26():
    records = _aime26()
    assert len(records) == 30
    for r in records:
        gold, wrong = r["answer"], str((int(r["answer"]) + 1) % 1000)
        for answer in (f"So the total is {int(gold) + 1} - 1.\n\nThe final answer is $\\boxed{{{gold}}}$.",
                       f"\\boxed{{{int(gold):03d}}}", f"Therefore $\\boxed{{{wrong}}}$.", f"\\boxed{{{gold}.5}}"):
            expected = grade_boxed_integer(answer, gold)[1]
            assert grade_math_verify(answer, gold)[1] == expected, (answer, gold)
        assert grade_math_verify(f"\\boxed{{{gold}}}", gold) == (str(int(gold)), True)
        assert read_gold("math_verify", gold) == read_gold("boxed_integer", gold) == str(int(gold))


@pytest.mark.parametrize("answer, gold, correct", [
    (r"The answer is $\boxed{\frac{1}{2}}$", "0.5", True),
    (r"so $\boxed{0.5}$", r"\frac{1}{2}", True),
    (r"$\boxed{\dfrac{\sqrt{2}}{2}}$", r"\frac{1}{\sqrt{2}}", True),
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", True),
    (r"\boxed{(1, 2]}", "(1,2]", True),
    (r"\boxed{[1, 2]}", "(1,2]", False),  # an interval's ends matter
    (r"\boxed{\frac{3}{4}}", r"\frac{4}{3}", False),
    (r"\boxed{\pi}", r"\pi", True),
    (r"\boxed{34}", "33", False),
    (None, "3", False),
    ("no math here", "3", False),
])
def test_math_verify_beyond_integers(answer, gold, correct):
    assert grade_math_verify(answer, gold)[1] is correct
    assert grade_boxed_integer(answer, gold)[1] is False or gold.isdigit()  # beyond what boxed_integer reads


def test_math_verify_off_the_main_thread():
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(grade_math_verify(r"\boxed{\frac{1}{2}}", "0.5")))
    thread.start()
    thread.join(60)
    assert results == [(r"\frac{1}{2}", True)]  # no signal.alarm outside the main thread


def test_read_gold():
    assert read_gold("boxed_integer", "033") == "33" and read_gold("boxed_integer", "1000") is None
    assert read_gold("last_integer", "-7") == "-7" and read_gold("last_integer", "#### 7") is None
    assert read_gold("yes_no_maybe", " Yes ") == "yes" and read_gold("yes_no_maybe", "perhaps") is None
    assert read_gold("math_verify", r"\frac{1}{2}") == r"\frac{1}{2}" and read_gold("math_verify", "") is None
    assert read_gold("last_integer", None) is None
    assert "0 to 999" in gold_format("boxed_integer")
