"""Stage 2, strip: remove the reasoning trace from a thinking model's output.

Qwen3 *-2507 thinking templates put `<think>` in the generation prompt, so an output usually
holds only the closing `</think>`. We split on the last `</think>` and keep what follows. A
generation that never closes its trace (cut off by `max_new_tokens`) is dropped, never used as a
label; so is one that reopens a trace after closing it, or leaves nothing after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from thinkswitch.io import read_jsonl, write_jsonl

log = logging.getLogger(__name__)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

OK, UNFINISHED, REOPENED, EMPTY = "ok", "unfinished", "reopened", "empty"
DROP_KEYS = tuple(f"strip/{s}" for s in (UNFINISHED, REOPENED, EMPTY))


@dataclass(frozen=True)
class Stripped:
    answer: Optional[str]  # None when the generation cannot be used as a label
    status: str  # ok | unfinished | reopened | empty


def strip_trace(text: str) -> Stripped:
    """The final answer after the last `</think>`, or why there is none."""
    head, sep, tail = text.rpartition(THINK_CLOSE)
    if not sep:
        return Stripped(None, UNFINISHED)
    if THINK_OPEN in tail:
        return Stripped(None, REOPENED)
    answer = tail.strip()
    if not answer:
        return Stripped(None, EMPTY)
    return Stripped(answer, OK)


def strip_generations(generations: Path, pairs: Path) -> dict:
    """Read raw generations (JSONL), write answer-only pairs; return counts by status."""
    rows = read_jsonl(generations)
    counts = {OK: 0, UNFINISHED: 0, REOPENED: 0, EMPTY: 0}
    kept = []
    for row in rows:
        result = strip_trace(row["output"])
        counts[result.status] += 1
        if result.answer is not None:
            kept.append({"id": row["id"], "sample": row.get("sample", 0), "prompt": row["prompt"],
                         "completion": result.answer})
    write_jsonl(pairs, kept)
    dropped = len(rows) - len(kept)
    log.info("strip: kept %d of %d generations (%s)", len(kept), len(rows),
             ", ".join(f"{k} {v}" for k, v in counts.items() if k != OK and v) or "none dropped")
    return {"strip/generations": len(rows), "strip/pairs": len(kept), "strip/dropped": dropped,
            **{f"strip/{k}": counts[k] for k in (UNFINISHED, REOPENED, EMPTY)}}
