"""Stage 5, evaluate: a checkpoint on the domain's evaluation set.

The instruct checkpoint answers directly; the thinking checkpoint writes its trace, which is
stripped before grading. An output is `finished` when its generation stopped by itself (not cut by
`max_new_tokens`) and left an answer (after a closed trace, for a thinking model); an unfinished
output is graded wrong without being read, so a grader's fallbacks (the last integer of the text)
only ever read answers that stopped. Per-question results are saved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from thinkswitch.analysis.stats import (
    bootstrap_interval,
    label_shares,
    macro_f1,
    majority,
    question_scores,
    wilson_interval,
)
from thinkswitch.config import Role, SamplingConfig
from thinkswitch.data.grading import Grader, get_grader
from thinkswitch.engines.base import Generator
from thinkswitch.engines.chat import THINK_CLOSE
from thinkswitch.stages.answer import answer_prompts
from thinkswitch.stages.inputs import Artifact, Engine, output_path, outside
from thinkswitch.stages.strip import strip_trace
from thinkswitch.store.io import write_jsonl

log = logging.getLogger(__name__)

# How outputs are graded (part of the evaluation's keys, not of its partial file's: the answers are the same)
GRADING_RULE = "finished: stopped by itself with an answer; unfinished outputs graded wrong, unread"


def final_answer(output: str, role: Role) -> Optional[str]:
    """The text to grade: after the trace for a thinking model; the whole output otherwise; None when there is
    none (a trace never closed, or nothing written)."""
    if role == Role.thinking or THINK_CLOSE in output:
        return strip_trace(output).answer
    return output.strip() or None


def grade_output(output: str, stopped: bool, role: Role, grader: Grader, gold: str) -> dict:
    """One output's `answer`, `pred`, `correct` and `finished` (stopped by itself, with an answer); an unfinished
    output is wrong, its answer not read (`pred` None: it casts no vote in maj@n)."""
    answer = final_answer(output, role)
    finished = bool(stopped) and answer is not None
    pred, correct = grader(answer, gold) if finished else (None, False)
    return {"answer": answer, "pred": pred, "correct": bool(correct), "finished": finished}


@dataclass(frozen=True)
class EvaluateInputs:
    """What one checkpoint's evaluation depends on: the stage `evaluate_<role>` of an iteration (its keys:
    `stages.inputs.stage_key`; a checkpoint evaluated the same way in another job is one stage-cache entry)."""

    checkpoint: Artifact
    role: Role  # how its outputs are read (a thinking model's trace is stripped)
    examples: tuple  # the evaluation questions, with their gold answers
    grader: str  # a name in thinkswitch.data.grading.GRADERS
    sampling: SamplingConfig
    samples: int  # evaluate.samples
    system_prompt: Optional[str]
    seed: int
    engine: Engine
    out: Path = output_path()
    grading: str = outside("partial", why="how answers are graded, not what is generated", default=GRADING_RULE)


def evaluate(inputs: EvaluateInputs, *, generator: Generator) -> dict:
    """The checkpoint answers every question `samples` times; grade, save per-question results to `inputs.out`,
    return `<role>/*` metrics.

    With `samples` > 1, `accuracy` is avg@n and `maj_accuracy` maj@n; `correct` is then the mean number of
    questions answered correctly. Resumable (`stages.answer.answer_prompts`): a rerun after a crash generates only what
    is missing.
    """
    t0 = time.perf_counter()
    role, examples, samples, grader = inputs.role, inputs.examples, inputs.samples, get_grader(inputs.grader)
    jobs = [(ex, s) for ex in examples for s in range(samples)]
    answers = answer_prompts(inputs, generator=generator, desc=f"evaluate {role}")
    gens = answers.rows
    rows = []
    for (ex, s), g in zip(jobs, gens):
        graded = grade_output(g["output"], g["stopped"], role, grader, ex["answer"])
        rows.append({"id": ex["id"], "sample": s, "prompt": ex["prompt"], "gold": ex["answer"], "output": g["output"],
                     **graded, "tokens": g["tokens"], "stopped": bool(g["stopped"])})
    write_jsonl(inputs.out, rows)
    answers.written()
    return scores(rows, inputs, grader, time.perf_counter() - t0)


def scores(rows: list[dict], inputs: EvaluateInputs, grader: Grader, seconds: float) -> dict:
    """`<role>/*` metrics of the graded `rows`."""
    role, examples, samples = inputs.role, inputs.examples, inputs.samples
    n, trials = len(examples), len(rows)
    hits = sum(r["correct"] for r in rows)
    low, high = accuracy_interval(rows, samples, seed=inputs.seed)
    metrics = {
        f"{role}/correct": hits if samples == 1 else hits / samples,
        f"{role}/n": n,
        f"{role}/accuracy": hits / trials if trials else 0.0,
        f"{role}/accuracy_ci_low": low,  # 95%: Wilson (one sample per question), else a bootstrap over questions
        f"{role}/accuracy_ci_high": high,
        f"{role}/tokens_per_answer": sum(r["tokens"] for r in rows) / trials if trials else 0.0,
        f"{role}/unfinished": sum(not r["finished"] for r in rows) / trials if trials else 0.0,
        f"{role}/eval_seconds": seconds,
    }
    if samples > 1:
        metrics[f"{role}/maj_accuracy"] = majority_accuracy(rows, examples, grader) / n if n else 0.0
    if getattr(grader, "labels", None):
        metrics |= label_metrics(role, rows, examples, grader.labels)
    log.info("evaluate %s: accuracy %.3f (n=%d%s), %.1f tokens per answer, %.1f%% unfinished", role,
             metrics[f"{role}/accuracy"], n, f", {samples} samples each" if samples > 1 else "",
             metrics[f"{role}/tokens_per_answer"], 100 * metrics[f"{role}/unfinished"])
    return metrics


def accuracy_interval(rows: Sequence[dict], samples: int, seed: int = 0) -> tuple[float, float]:
    """95% interval of the accuracy: Wilson over the questions with one sample each; with `samples` > 1 a
    percentile bootstrap over the questions (each resampled with all its samples: a question's samples are not
    independent draws of the accuracy, so counting n x k trials would make the interval too narrow)."""
    if samples == 1:
        return wilson_interval(sum(r["correct"] for r in rows), len(rows))
    per_question = list(question_scores(rows).values())
    return bootstrap_interval(per_question, seed=seed) if per_question else (0.0, 1.0)


def label_metrics(role: str, rows: Sequence[dict], examples: Sequence[dict], labels: Sequence[str]) -> dict:
    """For a grader over closed labels (yes/no/maybe): `<role>/macro_f1` over all answers, the gold label mix
    of the evaluation set (`eval/label_share/<label>`) and the accuracy of always answering its most common
    label (`eval/majority_baseline`)."""
    golds = [str(ex["answer"]).strip().lower() for ex in examples]
    shares = label_shares(golds, labels)
    return {f"{role}/macro_f1": macro_f1([str(r["gold"]).strip().lower() for r in rows], [r["pred"] for r in rows]),
            **{f"eval/label_share/{label}": share for label, share in shares.items()},
            "eval/majority_baseline": max(shares.values(), default=0.0)}


def majority_accuracy(rows: list[dict], examples: Sequence[dict], grader: Grader) -> int:
    """Questions whose majority answer over their samples is correct (maj@n)."""
    preds: dict[str, list] = {}
    for r in rows:
        preds.setdefault(r["id"], []).append(r["pred"])
    return sum(grader(majority(preds[ex["id"]])[0], ex["answer"])[1] for ex in examples)
