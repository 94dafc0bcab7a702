"""Answer extraction and grading: pure string functions, one grader per answer format.

A grader takes the final answer text (trace already stripped; None when the model never finished
its trace) and the gold answer, and returns the extracted prediction (or None) and whether it is
correct. Add a grader by writing a function and naming it in `GRADERS` (and its canonical answer
format, the form distillation targets take, in `_CANONICAL`). No function here raises on any text.
The callers read only answers whose generation stopped by itself (`stages.evaluate.grade_output`,
`stages.strip.strip_output`), so a fallback such as the last integer never reads an answer cut off
by the token budget.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Grade = tuple[str | None, bool]
Grader = Callable[[str | None, str], Grade]

_INT = re.compile(r"(?<![0-9.])-?[0-9]+(?:,[0-9]{3})*(?!\.?[0-9])")  # ASCII digits; not part of a decimal
_MAX_DIGITS = 4000  # Python refuses int(str) past 4,300 digits; no answer is that long


def last_integer(text: str) -> int | None:
    """The last integer written in `text` (`1,234` reads as 1234), or None (also for one of over 4,000 digits)."""
    digits = _last_integer_str(text)
    return None if digits is None or len(digits) > _MAX_DIGITS else int(digits)


def _last_integer_str(text: str) -> str | None:
    """The last integer of `text` in canonical form (see `_canonical_int`), never passed through int()."""
    matches = _INT.findall(text)
    return _canonical_int(matches[-1].replace(",", "")) if matches else None


def _canonical_int(s: str) -> str:
    """`-0012` -> `-12`, `-0` -> `0`, for a sign and a run of ASCII digits (any length)."""
    sign, digits = ("-", s[1:]) if s.startswith("-") else ("", s)
    digits = digits.lstrip("0") or "0"
    return digits if digits == "0" else sign + digits


def _gold_int(gold: str) -> str | None:
    """The gold answer as a canonical integer string, or None if it is not an integer."""
    text = str(gold).strip().removeprefix("+")
    return _canonical_int(text) if re.fullmatch(r"-?[0-9]+", text) else None


def grade_last_integer(answer: str | None, gold: str) -> Grade:
    """Correct when the last integer of the answer equals the gold integer."""
    if answer is None:
        return None, False
    pred = _last_integer_str(answer)
    return (None, False) if pred is None else (pred, pred == _gold_int(gold))


# --- \boxed{} --------------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character, `\{` included, is not a brace


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{...}` whose braces balance (`\\{`, `\\}` are not braces), or None."""
    if not text or "\\boxed" not in text:
        return None
    closing = _matching_braces(text)
    for match in reversed(list(_BOXED.finditer(text))):
        start = match.end() - 1  # the opening brace
        if start in closing:
            return text[start + 1:closing[start]]
    return None


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each `{` that is closed -> position of its `}` (one linear pass)."""
    closing, stack = {}, []
    for match in _BRACE_OR_ESCAPE.finditer(text):
        c = match.group()
        if c == "{":
            stack.append(match.start())
        elif c == "}" and stack:
            closing[stack.pop()] = match.start()
    return closing


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_BOXED_NOISE = re.compile(r"\$|\\[,;:! ]|\\quad|\\qquad|\^\s*\{?\s*\\circ\s*\}?|\\left|\\right|\s")
_BRACED = re.compile(r"(\{*)([^{}]*)(\}*)")
_BOXED_INT = re.compile(r"-?(?:[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+)")


def boxed_integer(content: str) -> str | None:
    """The integer a `\\boxed{}` content spells (`033`, `1,000`, `1{,}000`, `\\text{ 42 }`, `90^\\circ`), or None."""
    content, previous = content.replace("{,}", ",").replace("\u2212", "-"), None
    while previous != content:  # unwrap \text{\textbf{42}}
        previous, content = content, _TEXT_WRAPPER.sub(r"\1", content)
    content = _BOXED_NOISE.sub("", content)
    group = _BRACED.fullmatch(content)  # {42}, {{42}}
    if group and len(group.group(1)) == len(group.group(3)):
        content = group.group(2)
    if not _BOXED_INT.fullmatch(content):
        return None
    return _canonical_int(content.replace(",", ""))


def grade_boxed_integer(answer: str | None, gold: str) -> Grade:
    """AIME: the integer in the last `\\boxed{}` (else the last integer of the answer); valid answers are 0-999."""
    if answer is None:
        return None, False
    boxed = last_boxed(answer)
    pred = _last_integer_str(answer) if boxed is None else boxed_integer(boxed)
    if pred is None:
        return None, False
    in_range = not pred.startswith("-") and len(pred) <= 3
    return pred, in_range and pred == _gold_int(gold)


# --- yes / no / maybe ------------------------------------------------------------------------------------------

_WORD = r"(?<![^\W_])(yes|no|maybe)(?![^\W_])"  # a whole word; `_` and `*` around it (Markdown) are fine
_LABEL = re.compile(_WORD, re.IGNORECASE)
_STATEMENT = re.compile(  # "The answer is: **no**", "Final answer: yes", "the answer to <question> is maybe"
    r"(?<![^\W_])(?:final\s+answer|answer(?:\s+to\s+[^.\n]{0,80}?)?)[*_]*(?:\s+is|\s*:)(?:\s+is)?"
    r"[\s:*_\"'`\-\u2013\u2014]*" + _WORD, re.IGNORECASE)
_LEADING = re.compile(r"[\s*_\"'`#>\-:.(\[]*" + _WORD, re.IGNORECASE)


def yes_no_maybe(text: str | None) -> str | None:
    """yes / no / maybe from an answer: the `\\boxed{}` content, else the last "answer is ..." statement,
    else the answer's first word, else the last of these words anywhere; lowercase, or None."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None and (found := _LABEL.search(boxed)):
        return found.group(1).lower()
    statements = _STATEMENT.findall(text)
    if statements:
        return statements[-1].lower()
    if found := _LEADING.match(text):
        return found.group(1).lower()
    words = _LABEL.findall(text)
    return words[-1].lower() if words else None


def grade_yes_no_maybe(answer: str | None, gold: str) -> Grade:
    """PubMedQA: the extracted yes / no / maybe equals the gold label (case-insensitive)."""
    pred = yes_no_maybe(answer)
    return pred, pred is not None and pred == str(gold).strip().lower()


# A grader over a closed set of labels says so: evaluation then also reports macro-F1 and the label mix.
grade_yes_no_maybe.labels = ("yes", "no", "maybe")


# --- math-verify (lighteval, open-r1) ---------------------------------------------------------------------------

_MV_MAX_CHARS = 4000  # the answer's tail that math-verify reads: a final answer is at the end; bounds its time
_MV_TIMEOUT_S = 5  # math-verify's own per-call limit (signal.alarm: main thread only)


def _mv_timeout() -> int | None:
    """math-verify times out with SIGALRM, which only the main thread may set: elsewhere no timeout (the input
    is capped at `_MV_MAX_CHARS`, which bounds the time instead)."""
    return _MV_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _mv_parse(text: str) -> list:
    """math-verify's parse (LaTeX, then plain expressions); [] when it finds nothing or fails."""
    from math_verify import parse

    try:
        return parse(text, parsing_timeout=_mv_timeout(), raise_on_error=True)
    except Exception as e:  # a timeout, or sympy failing on odd input: not an answer
        log.debug("math-verify could not parse %r: %s: %s", text[:80], type(e).__name__, e)
        return []


@functools.lru_cache(maxsize=4096)
def _mv_gold(gold: str) -> tuple:
    """A gold answer parsed once: bare text is read as math (`$...$`), text with `$` or a box as written."""
    text = str(gold).strip()
    if not text:
        return ()
    return tuple(_mv_parse(text if "$" in text or "\\boxed" in text else f"${text}$"))


def grade_math_verify(answer: str | None, gold: str) -> Grade:
    """math-verify (Hugging Face; what lighteval and open-r1 score math with): the answer's last `\\boxed{}` or
    final-answer expression, compared with the gold symbolically (fractions, radicals, intervals, sets, LaTeX).
    The prediction is math-verify's extracted text."""
    if answer is None:
        return None, False
    gold_parsed = _mv_gold(str(gold))
    pred_parsed = _mv_parse(answer[-_MV_MAX_CHARS:])
    if not pred_parsed:
        return None, False
    pred = str(pred_parsed[-1]) if isinstance(pred_parsed[-1], str) else str(pred_parsed[0])
    if not gold_parsed:
        return pred, False
    from math_verify import verify

    try:
        correct = verify(list(gold_parsed), pred_parsed, timeout_seconds=_mv_timeout(), raise_on_error=True)
    except Exception as e:
        log.debug("math-verify could not compare %r with %r: %s: %s", pred, gold, type(e).__name__, e)
        correct = False
    return pred, bool(correct)


# --- gold answers ----------------------------------------------------------------------------------------------

def _gold_label(gold: str) -> str | None:
    label = str(gold).strip().lower()
    return label if label in grade_yes_no_maybe.labels else None


def _gold_aime(gold: str) -> str | None:
    value = _gold_int(gold)
    return value if value is not None and not value.startswith("-") and len(value) <= 3 else None


def _gold_math(gold: str) -> str | None:
    parsed = _mv_gold(str(gold))
    return str(parsed[-1]) if parsed else None


# Each grader's reading of a gold answer (None: the grader could never match it), and what it expects.
_GOLD: dict[str, tuple[Callable[[str], str | None], str]] = {
    "last_integer": (_gold_int, "an integer"),
    "boxed_integer": (_gold_aime, "an integer from 0 to 999"),
    "yes_no_maybe": (_gold_label, "yes, no or maybe"),
    "math_verify": (_gold_math, "a number or expression math-verify can parse (plain or LaTeX)"),
}


def read_gold(grader_name: str, gold: str | None) -> str | None:
    """The gold answer as the grader reads it, or None when it cannot (no answer could ever match it)."""
    get_grader(grader_name)
    return None if gold is None else _GOLD[grader_name][0](str(gold))


def gold_format(grader_name: str) -> str:
    """What a grader expects of a gold answer, in words (for error messages)."""
    get_grader(grader_name)
    return _GOLD[grader_name][1]


# --- registry --------------------------------------------------------------------------------------------------

GRADERS: dict[str, Grader] = {
    "last_integer": grade_last_integer,
    "boxed_integer": grade_boxed_integer,
    "yes_no_maybe": grade_yes_no_maybe,
    "math_verify": grade_math_verify,
}

_CANONICAL: dict[str, Callable[[str], str]] = {
    "last_integer": lambda pred: _gold_int(pred) or pred.strip(),
    "boxed_integer": lambda pred: "\\boxed{" + (_gold_int(pred) or pred.strip()) + "}",
    "yes_no_maybe": lambda pred: pred.strip().lower(),
    "math_verify": lambda pred: "\\boxed{" + pred.strip() + "}",
}


def get_grader(name: str) -> Grader:
    try:
        grader = GRADERS[name]
    except KeyError:
        raise ValueError(f"domain.grader: unknown grader {name!r}; known: {sorted(GRADERS)}") from None
    if name == "math_verify" and importlib.util.find_spec("math_verify") is None:
        raise ValueError("domain.grader: math_verify needs the math-verify package (pip install math-verify)")
    return grader


def canonical_answer(grader_name: str, pred: str) -> str:
    """A grader's prediction written in the domain's canonical answer format (`\\boxed{33}`, `yes`, `33`)."""
    get_grader(grader_name)  # the same error for an unknown name
    return _CANONICAL[grader_name](str(pred))
