"""The testbed's task: sums of digit strings, with the running sums as the reasoning trace.

Pure and deterministic (no torch): the `testbed` domain draws its prompts here, and `thinkswitch.testbed.build`
trains the pair on the same problems.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
from typing import Iterator

from thinkswitch.config import TestbedSpec

# The most prompts `task_examples` gives per split: 100x the default domain's 1024 training prompts,
# drawn in ~2 s (train) / ~8 s (eval, 1 problem in 8) and ~40 MB; more is a typo, not an experiment.
MAX_TASK_PROMPTS = 100_000


def _digits_split(digits: str) -> str:
    """Deterministic train/eval assignment of a problem (1 in 8 problems is eval-only)."""
    return "eval" if hashlib.sha256(digits.encode()).digest()[0] % 8 == 0 else "train"


def _format(digits: str) -> tuple[str, int, str]:
    values = [int(c) for c in digits]
    total = values[0] + values[1]
    parts = [f"{values[0]}+{values[1]}={total}"]
    for v in values[2:]:
        total += v
        parts.append(f"+{v}={total}")
    return f"sum {digits}", total, ",".join(parts)


def make_problem(rng: random.Random, spec: TestbedSpec) -> tuple[str, int, str]:
    """(user message text, integer answer, reasoning trace text without tags)."""
    n = rng.randint(spec.min_digits, spec.max_digits)
    return _format("".join(rng.choice("0123456789") for _ in range(n)))


def _problems(rng: random.Random, spec: TestbedSpec, split: str) -> Iterator[tuple[str, int, str]]:
    """Endless stream of problems belonging to ``split``."""
    while True:
        prob = make_problem(rng, spec)
        if _digits_split(prob[0].split()[-1]) == split:
            yield prob


@functools.lru_cache(maxsize=None)
def _split_count(digits: int, split: str) -> int:
    """How many digit strings of length `digits` belong to `split` (counted: 10**digits hashes)."""
    return sum(_digits_split(f"{i:0{digits}d}") == split for i in range(10 ** digits))


def task_capacity(spec: TestbedSpec, split: str) -> int:
    """How many distinct problems `task_examples` can give for `split`: the split's digit strings of
    `spec.min_digits`..`spec.max_digits` digits, at most `MAX_TASK_PROMPTS`."""
    total = 0
    for digits in range(spec.min_digits, spec.max_digits + 1):
        if digits >= 6:  # 10**6 strings hold 125,138 eval and 874,862 train problems: past the cap either way
            return MAX_TASK_PROMPTS
        total += _split_count(digits, split)
    return min(total, MAX_TASK_PROMPTS)


_DRAWN: dict[tuple, list[dict]] = {}  # task_examples' draws in this process (a multirun's jobs draw the same)


def task_examples(n: int, seed: int, split: str, spec: TestbedSpec) -> list[dict]:
    """n distinct problems as {"id", "prompt", "answer"}; train/eval never share a problem. Each call returns
    new dicts; a draw already made in this process is copied, not drawn again."""
    key = (n, seed, split, dataclasses.astuple(spec))
    if key not in _DRAWN:
        if len(_DRAWN) >= 8:
            _DRAWN.clear()
        _DRAWN[key] = _draw(n, seed, split, spec)
    return [dict(ex) for ex in _DRAWN[key]]


def _draw(n: int, seed: int, split: str, spec: TestbedSpec) -> list[dict]:
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if n > (cap := task_capacity(spec, split)):  # the draw below would never end (or fill memory)
        raise ValueError(f"asked for {n} {split} problems; the testbed task gives at most {cap}")
    rng = random.Random(f"task-{split}-{seed}")
    seen: set[str] = set()
    out: list[dict] = []
    for prompt, answer, _ in _problems(rng, spec, split):
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append({"id": f"{split}-{seed}-{len(out):05d}", "prompt": prompt, "answer": str(answer)})
        if len(out) == n:
            return out
    raise AssertionError("unreachable")
