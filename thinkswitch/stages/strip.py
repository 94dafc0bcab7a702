"""Stage 2, strip: remove the reasoning trace from a thinking model's output.

Qwen3 *-2507 thinking templates put `<think>` in the generation prompt, so an output usually
holds only the closing `</think>`. We split on the last `</think>` and keep what follows. A
generation that never closes its trace is dropped, never used as a label; so is one that reopens a
trace after closing it, or leaves nothing after it, and one the token budget cut off after its trace
(it did not stop by itself: trained on, it would teach the instruct model to stop mid-answer, since
the trainer appends the end-of-turn token). `distill.filter` then chooses among the answers left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from thinkswitch.analysis.stats import majority
from thinkswitch.config import Choice, DistillConfig, Filter, Target
from thinkswitch.data.grading import canonical_answer, get_grader
from thinkswitch.engines.chat import THINK_CLOSE, THINK_OPEN
from thinkswitch.errors import StageError
from thinkswitch.stages.inputs import Artifact, output_path
from thinkswitch.store.io import read_jsonl, write_jsonl

log = logging.getLogger(__name__)

class Status(Choice):
    """Whether a generation gives a label, or why not; counted (`strip/<status>`) and reported in this order."""

    ok = "ok"
    unfinished = "unfinished"  # the trace never closed (cut off by max_new_tokens)
    truncated = "truncated"  # the answer after the trace was cut off by max_new_tokens
    reopened = "reopened"  # a trace opened again after the last `</think>`
    empty = "empty"  # nothing after the trace


OK, UNFINISHED, TRUNCATED, REOPENED, EMPTY = Status
DROPPED = (UNFINISHED, TRUNCATED, REOPENED, EMPTY)  # why an output is no label, each counted in `strip/<status>`
# What makes an output a label (part of the strip stage's keys: a change of it redoes the stage)
LABEL_RULE = "the answer after a closed trace, of an output that stopped by itself"


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


def strip_output(text: str, stopped: bool) -> Stripped:
    """`strip_trace` of a generation; an answer whose generation did not stop (cut by `max_new_tokens` after the
    trace) is `truncated`: no label."""
    result = strip_trace(text)
    return Stripped(None, TRUNCATED) if result.answer is not None and not stopped else result


def select_pairs(rows: list[dict], k: int, grader_name: str, cfg: DistillConfig,
                 golds: Optional[Mapping[str, str]] = None) -> list[dict]:
    """The training pairs among stripped answers (`rows` with `completion`), per `distill.filter`; with `golds`
    (id -> gold answer: the gold_oracle baseline), only those the grader marks correct among them.

    `k` is the number of samples generated per prompt: agreement is counted against all of them,
    finished or not. Only `golds` reads a gold answer.
    """
    grader = get_grader(grader_name)
    for r in rows:
        r["pred"] = grader(r["completion"], "")[0]  # the extracted answer; gold is not looked at
    if cfg.filter == Filter.parsable:
        rows = [r for r in rows if r["pred"] is not None]
    elif cfg.filter == Filter.majority:
        by_prompt: dict[str, list[dict]] = {}
        for r in rows:
            by_prompt.setdefault(r["id"], []).append(r)
        rows = []
        for group in by_prompt.values():
            value, count = majority([r["pred"] for r in group])
            if value is not None and count / k >= cfg.min_agreement:
                rows += [r for r in group if r["pred"] == value]
    if golds is not None:
        rows = [r for r in rows if grader(r["completion"], golds[r["id"]])[1]]
    if cfg.target == Target.canonical:
        rows = [{**r, "completion": canonical_answer(grader_name, r["pred"])} for r in rows if r["pred"] is not None]
    return rows


@dataclass(frozen=True)
class StripInputs:
    """What the answer-only pairs depend on (their keys: `stages.inputs.stage_key`)."""

    generations: Artifact  # the raw generations (generate's output)
    grader: str  # extracts the answers the filters compare and the `canonical` target writes
    cfg: DistillConfig  # distill.*: the filter and the target form
    pairs: Path = output_path()
    rule: str = LABEL_RULE  # what makes an output a label


@dataclass(frozen=True)
class GoldInputs:
    """The gold_oracle baseline's pairs: the method's own (the thinking model's stripped answers, `distill.filter`
    applied), of which only those that match the dataset's gold answer are kept."""

    generations: Artifact  # the raw generations (generate's output)
    examples: tuple  # the training prompts with their gold answers
    grader: str  # extracts the answers and grades them against the gold
    cfg: DistillConfig  # distill.*: the filter and the target form
    pairs: Path = output_path()
    rule: str = LABEL_RULE


def strip_generations(inputs: StripInputs) -> dict:
    """Read raw generations (JSONL), write the answer-only pairs; return counts of what survived.

    Raises StageError when no pair survives (nothing to distill), saying why they were dropped.
    """
    return _strip(inputs.generations, inputs.grader, inputs.cfg, inputs.pairs)


def gold_pairs(inputs: GoldInputs) -> dict:
    """The oracle baseline's labels: the thinking model's answers, stripped and filtered as the method's are, that
    are correct; the same format as the method's labels, only their correctness differs."""
    missing = missing_gold(inputs.examples)
    if missing:
        raise StageError(missing)
    golds = {ex["id"]: ex["answer"] for ex in inputs.examples}
    return _strip(inputs.generations, inputs.grader, inputs.cfg, inputs.pairs, golds)


def missing_gold(examples) -> Optional[str]:
    """Why the gold_oracle baseline cannot filter these training prompts' labels (None: every one has a gold
    answer); checked at setup too, before the labels are generated."""
    missing = [ex["id"] for ex in examples if ex.get("answer") is None]
    if not missing:
        return None
    return (f"method=gold_oracle needs answers for the training prompts; map `answer` in domain.train.fields "
            f"(e.g. id {missing[0]} has none)")


def _strip(generations: Artifact, grader_name: str, cfg: DistillConfig, pairs: Path,
           golds: Optional[Mapping[str, str]] = None) -> dict:
    rows = read_jsonl(generations.path)
    counts = dict.fromkeys((OK, *DROPPED), 0)
    stripped = []
    for row in rows:
        result = strip_output(row["output"], row["stopped"])
        counts[result.status] += 1
        if result.answer is not None:
            stripped.append({"id": row["id"], "sample": row.get("sample", 0), "prompt": row["prompt"],
                             "completion": result.answer})
    prompts = {row["id"] for row in rows}
    k = len(rows) // max(len(prompts), 1)
    kept = select_pairs(stripped, k, grader_name, cfg, golds)
    write_jsonl(pairs, kept)
    selection = f"filter {cfg.filter}" + (" and the gold answer" if golds is not None else "")
    log.info("strip: %d of %d generations stopped with an answer after their trace (%s); %s kept %d pairs from %d "
             "of %d prompts", len(stripped), len(rows),
             ", ".join(f"{v} {k}" for k, v in counts.items() if k != OK and v) or "none dropped",
             selection, len(kept), len({r["id"] for r in kept}), len(prompts))
    if not kept:
        raise StageError(nothing_kept(len(rows), counts, selection))
    return {"strip/generations": len(rows), "strip/finished": len(stripped), "strip/pairs": len(kept),
            "strip/dropped": len(rows) - len(kept), "strip/filtered": len(stripped) - len(kept),
            "strip/prompts": len(prompts), "strip/prompts_kept": len({r["id"] for r in kept}),
            **{f"strip/{k}": counts[k] for k in DROPPED}}


def nothing_kept(total: int, counts: Mapping[str, int], selection: str) -> str:
    """Why no pair survived, and what to change."""
    if counts[OK]:
        return (f"{selection} dropped all {counts[OK]} answers of the {total} generations; nothing to distill "
                "(more samples: generation.samples_per_prompt; or another distill.filter)")
    reasons = ", ".join(f"{k}: {counts[k]}" for k in DROPPED if counts[k])
    hint = (" If traces or answers were cut off, raise model.sampling.thinking.max_new_tokens"
            if counts[UNFINISHED] or counts[TRUNCATED] else "")
    return f"all {total} generations were dropped ({reasons}); nothing to distill.{hint}"
