"""Stage 5, evaluate: a checkpoint on the domain's evaluation set.

The instruct checkpoint answers directly; the thinking checkpoint writes its trace, which is
stripped before grading (an unfinished trace scores as wrong). Per-question results are saved.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from thinkswitch.analysis.stats import label_shares, macro_f1, majority, wilson_interval
from thinkswitch.config import SamplingConfig, SamplingPair
from thinkswitch.data.grading import Grader
from thinkswitch.engines.chat import THINK_CLOSE, chat_prompt
from thinkswitch.engines.hf import RNG_SCHEME, Generator
from thinkswitch.stages.generate import partial_key
from thinkswitch.stages.strip import strip_trace
from thinkswitch.store.cache import digest
from thinkswitch.store.io import write_jsonl
from thinkswitch.store.partial import PartialResults, generate_resumable

log = logging.getLogger(__name__)


def final_answer(output: str, role: str) -> Optional[str]:
    """The text to grade: after the trace for a thinking model; the whole output otherwise."""
    if role == "thinking" or THINK_CLOSE in output:
        return strip_trace(output).answer
    return output.strip()


def cache_key(*, checkpoint_ids: dict[str, str], examples: Sequence[dict], sampling: SamplingPair, samples: int,
              grader_name: str, seed: int, context: tuple) -> str:
    """What determines both checkpoints' results: the checkpoints, the questions, sampling, the grader,
    the seed and the context (`loop.stage_context`)."""
    return digest("evaluate", checkpoint_ids["instruct"], checkpoint_ids["thinking"], list(examples), sampling,
                  samples, grader_name, seed, RNG_SCHEME, *context)


def role_cache_key(*, role: str, checkpoint_id: str, examples: Sequence[dict], sampling: SamplingConfig,
                   samples: int, grader_name: str, seed: int, context: tuple) -> str:
    """What determines one checkpoint's results (`evaluate` for one role): `cache_key`'s inputs for that role."""
    return digest("evaluate-role", role, checkpoint_id, list(examples), sampling, samples, grader_name, seed,
                  RNG_SCHEME, *context)


def evaluate(*, generator: Generator, checkpoint: str, role: str, examples: Sequence[dict], grader: Grader,
             sampling: SamplingConfig, samples: int, system_prompt: Optional[str], seed: int, out: Path,
             keep_partial: bool = False) -> dict:
    """`checkpoint` answers every question `samples` times; grade, save per-question results to `out`,
    return `<role>/*` metrics.

    With `samples` > 1, `accuracy` is avg@n and `maj_accuracy` maj@n; `correct` is then the mean number of
    questions answered correctly. Answers are kept in `out`'s partial file (`thinkswitch.store.partial`) batch by
    batch, so a rerun after a crash generates only what is missing; the partial file is removed once `out` is
    written, unless `keep_partial` (a stage of several evaluations removes them when all are written, so that
    a crash in the second does not redo the first).
    """
    t0 = time.perf_counter()
    jobs = [(ex, s) for ex in examples for s in range(samples)]
    with generator.open(checkpoint) as backend:
        prompts = [chat_prompt(backend.tokenizer, ex["prompt"], system_prompt) for ex in examples]
        partial = PartialResults(out, partial_key(f"evaluate {role}", generator, checkpoint, prompts, sampling,
                                                  samples, seed))
        gens = generate_resumable(backend, prompts, sampling, seed=seed, n=samples, desc=f"evaluate {role}",
                                  partial=partial)
    rows = []
    for (ex, s), g in zip(jobs, gens):
        answer = final_answer(g["output"], role)
        pred, correct = grader(answer, ex["answer"])
        rows.append({"id": ex["id"], "sample": s, "prompt": ex["prompt"], "gold": ex["answer"], "output": g["output"],
                     "answer": answer, "pred": pred, "correct": bool(correct), "tokens": g["tokens"],
                     "finished": answer is not None})
    write_jsonl(out, rows)
    if not keep_partial:
        partial.remove()
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
        f"{role}/eval_seconds": time.perf_counter() - t0,
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
