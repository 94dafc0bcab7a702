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

from thinkswitch.analysis.stats import majority
from thinkswitch.config import Choice, DistillConfig, Filter, Target
from thinkswitch.data.grading import canonical_answer, get_grader
from thinkswitch.engines.chat import THINK_CLOSE, THINK_OPEN
from thinkswitch.errors import StageError
from thinkswitch.stages.inputs import Artifact, output_path
from thinkswitch.store.io import read_jsonl, write_jsonl

log = logging.getLogger(__name__)

class Status(Choice):
    """Whether a generation gives an answer, or why not; counted and reported in this order."""

    ok = "ok"
    unfinished = "unfinished"  # the trace never closed (cut off by max_new_tokens)
    reopened = "reopened"  # a trace opened again after the last `</think>`
    empty = "empty"  # nothing after the trace


DROPPED = (Status.unfinished, Status.reopened, Status.empty)  # the statuses without an answer, in Status' order


@dataclass(frozen=True)
class Stripped:
    answer: Optional[str]  # None when the generation cannot be used as a label
    status: Status


def strip_trace(text: str) -> Stripped:
    """The final answer after the last `</think>`, or why there is none."""
    head, sep, tail = text.rpartition(THINK_CLOSE)
    if not sep:
        return Stripped(None, Status.unfinished)
    if THINK_OPEN in tail:
        return Stripped(None, Status.reopened)
    answer = tail.strip()
    if not answer:
        return Stripped(None, Status.empty)
    return Stripped(answer, Status.ok)


def select_pairs(rows: list[dict], k: int, grader_name: str, cfg: DistillConfig) -> list[dict]:
    """The training pairs among stripped answers (`rows` with `completion`), per `distill.filter`.

    `k` is the number of samples generated per prompt: agreement is counted against all of them,
    finished or not.
    """
    grader = get_grader(grader_name)
    for r in rows:
        r["pred"] = grader(r["completion"], "")[0]  # the extracted answer; gold is not looked at
    if cfg.filter == Filter.majority:
        by_prompt: dict[str, list[dict]] = {}
        for r in rows:
            by_prompt.setdefault(r["id"], []).append(r)
        rows = []
        for group in by_prompt.values():
            value, count = majority([r["pred"] for r in group])
            if value is not None and count / k >= cfg.min_agreement:
                rows += [r for r in group if r["pred"] == value]
    if cfg.target == Target.canonical:
        rows = [{**r, "completion": canonical_answer(grader_name, r["pred"])} for r in rows if r["pred"] is not None]
    return rows


@dataclass(frozen=True)
class StripInputs:
    """What the answer-only pairs depend on (their keys: `stages.inputs.stage_key`)."""

    generations: Artifact  # the raw generations (generate's output)
    grader: str  # extracts the answers the `majority` filter compares and the `canonical` target writes
    cfg: DistillConfig  # distill.*: the filter and the target form
    pairs: Path = output_path()


@dataclass(frozen=True)
class GoldInputs:
    """The gold_oracle baseline's pairs: the dataset's own answers."""

    examples: tuple  # the training prompts with their answers
    grader: str  # the canonical answer format
    pairs: Path = output_path()


def strip_generations(inputs: StripInputs) -> dict:
    """Read raw generations (JSONL), write the answer-only pairs; return counts of what survived.

    Raises StageError when no pair survives (nothing to distill), saying why they were dropped.
    """
    pairs, grader_name, cfg = inputs.pairs, inputs.grader, inputs.cfg
    rows = read_jsonl(inputs.generations.path)
    counts = dict.fromkeys(Status, 0)
    stripped = []
    for row in rows:
        result = strip_trace(row["output"])
        counts[result.status] += 1
        if result.answer is not None:
            stripped.append({"id": row["id"], "sample": row.get("sample", 0), "prompt": row["prompt"],
                             "completion": result.answer})
    prompts = {row["id"] for row in rows}
    k = len(rows) // max(len(prompts), 1)
    kept = select_pairs(stripped, k, grader_name, cfg)
    write_jsonl(pairs, kept)
    log.info("strip: %d of %d generations finished their trace (%s); filter %s kept %d pairs from %d of %d prompts",
             len(stripped), len(rows),
             ", ".join(f"{k} {v}" for k, v in counts.items() if k != Status.ok and v) or "none dropped",
             cfg.filter, len(kept), len({r["id"] for r in kept}), len(prompts))
    if not kept:
        reasons = ", ".join(f"{k}: {counts[k]}" for k in DROPPED if counts[k])
        raise StageError(f"all {len(rows)} generations were dropped ({reasons or f'filter {cfg.filter}'}); nothing "
                         f"to distill. If traces were cut off, raise model.sampling.thinking.max_new_tokens")
    return {"strip/generations": len(rows), "strip/finished": len(stripped), "strip/pairs": len(kept),
            "strip/dropped": len(rows) - len(kept), "strip/prompts": len(prompts),
            "strip/prompts_kept": len({r["id"] for r in kept}),
            **{f"strip/{k}": counts[k] for k in DROPPED}}


def gold_pairs(inputs: GoldInputs) -> dict:
    """The oracle baseline's labels: the dataset's own answers (canonical format) as training targets."""
    examples, grader_name, pairs = inputs.examples, inputs.grader, inputs.pairs
    missing = [ex["id"] for ex in examples if ex.get("answer") is None]
    if missing:
        raise StageError(f"method=gold_oracle needs answers for the training prompts; map `answer` in "
                         f"domain.train.fields (e.g. id {missing[0]} has none)")
    rows = [{"id": ex["id"], "sample": 0, "prompt": ex["prompt"],
             "completion": canonical_answer(grader_name, ex["answer"])} for ex in examples]
    write_jsonl(pairs, rows)
    return {"strip/pairs": len(rows), "strip/prompts": len(rows), "strip/prompts_kept": len(rows)}
