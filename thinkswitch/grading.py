"""Answer extraction and grading: pure string functions, one grader per answer format.

A grader takes the final answer text (trace already stripped; None when the model never finished
its trace) and the gold answer, and returns the extracted prediction (or None) and whether it is
correct. Add a grader by writing a function and naming it in `GRADERS`.
"""

from __future__ import annotations

import re
from typing import Callable, Optional, Tuple

Grade = Tuple[Optional[str], bool]
Grader = Callable[[Optional[str], str], Grade]

_INT = re.compile(r"(?<![0-9.])-?[0-9]+(?:,[0-9]{3})*(?!\.?[0-9])")  # ASCII digits; not part of a decimal


def last_integer(text: str) -> Optional[int]:
    """The last integer written in `text` (`1,234` reads as 1234), or None."""
    matches = _INT.findall(text)
    if not matches:
        return None
    return int(matches[-1].replace(",", ""))


def _gold_int(gold: str) -> Optional[int]:
    try:
        return int(str(gold).strip())
    except ValueError:
        return None


def grade_last_integer(answer: Optional[str], gold: str) -> Grade:
    """Correct when the last integer of the answer equals the gold integer."""
    if answer is None:
        return None, False
    pred = last_integer(answer)
    return (None, False) if pred is None else (str(pred), pred == _gold_int(gold))


GRADERS: dict[str, Grader] = {
    "last_integer": grade_last_integer,
}


def get_grader(name: str) -> Grader:
    try:
        return GRADERS[name]
    except KeyError:
        raise ValueError(f"domain.grader: unknown grader {name!r}; known: {sorted(GRADERS)}") from None
