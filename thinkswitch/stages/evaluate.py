"""Stage 5, evaluate: a checkpoint on the domain's evaluation set.

The instruct checkpoint answers directly; the thinking checkpoint writes its trace, which is
stripped before grading (an unfinished trace scores as wrong). Per-question results are saved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from thinkswitch.analysis.stats import label_shares, macro_f1, majority, wilson_interval
from thinkswitch.config import Role, SamplingConfig
from thinkswitch.data.grading import Grader, get_grader
from thinkswitch.engines.base import Generator
from thinkswitch.engines.chat import THINK_CLOSE
from thinkswitch.stages.answer import answer_prompts
from thinkswitch.stages.inputs import Artifact, Engine, output_path
from thinkswitch.stages.strip import strip_trace
from thinkswitch.store.io import write_jsonl

log = logging.getLogger(__name__)


def final_answer(output: str, role: Role) -> Optional[str]:
    """The text to grade: after the trace for a thinking model; the whole output otherwise."""
    if role == Role.thinking or THINK_CLOSE in output:
        return strip_trace(output).answer
    return output.strip()


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
        answer = final_answer(g["output"], role)
        pred, correct = grader(answer, ex["answer"])
        rows.append({"id": ex["id"], "sample": s, "prompt": ex["prompt"], "gold": ex["answer"], "output": g["output"],
                     "answer": answer, "pred": pred, "correct": bool(correct), "tokens": g["tokens"],
                     "finished": answer is not None})
    write_jsonl(inputs.out, rows)
    answers.written()
    return scores(rows, inputs, grader, time.perf_counter() - t0)


def scores(rows: list[dict], inputs: EvaluateInputs, grader: Grader, seconds: float) -> dict:
    """`<role>/*` metrics of the graded `rows`."""
    role, examples, samples = inputs.role, inputs.examples, inputs.samples
    n, trials = len(examples), len(rows)
    hits = sum(r["correct"] for r in rows)
    low, high = wilson_interval(hits, trials)
    metrics = {
        f"{role}/correct": hits if samples == 1 else hits / samples,
        f"{role}/n": n,
        f"{role}/accuracy": hits / trials if trials else 0.0,
        f"{role}/accuracy_ci_low": low,  # 95% Wilson interval
        f"{role}/accuracy_ci_high": high,
        f"{role}/tokens_per_answer": sum(r["tokens"] for r in rows) / trials if trials else 0.0,
        f"{role}/unfinished": sum(not r["finished"] for r in rows) / trials if trials else 0.0,
        f"{role}/eval_seconds": seconds,
    }
    if samples > 1:
        metrics[f"{role}/maj_accuracy"] = majority_accuracy(rows, examples, grader) / n if n else 0.0
    if getattr(grader, "labels", None):
        metrics |= label_metrics(role, rows, examples, grader.labels)
    log.info("evaluate %s: accuracy %.3f (n=%d%s), %.1f tokens per answer", role, metrics[f"{role}/accuracy"], n,
             f", {samples} samples each" if samples > 1 else "", metrics[f"{role}/tokens_per_answer"])
    return metrics


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
