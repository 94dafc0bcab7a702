"""Stage 5, evaluate: a checkpoint on the domain's evaluation set.

The instruct checkpoint answers directly; the thinking checkpoint writes its trace, which is
stripped before grading (an unfinished trace scores as wrong). Per-question results are saved.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from thinkswitch.config import SamplingConfig
from thinkswitch.generate import chat_prompt, generate_texts
from thinkswitch.grading import Grader
from thinkswitch.io import write_jsonl
from thinkswitch.stats import wilson_interval
from thinkswitch.strip import THINK_CLOSE, strip_trace

log = logging.getLogger(__name__)

ROLES = ("instruct", "thinking")


def final_answer(output: str, role: str) -> Optional[str]:
    """The text to grade: after the trace for a thinking model; the whole output otherwise."""
    if role == "thinking" or THINK_CLOSE in output:
        return strip_trace(output).answer
    return output.strip()


def evaluate(model, tokenizer, role: str, examples: Sequence[dict], grader: Grader, sampling: SamplingConfig,
             batch_size: int, system_prompt: Optional[str], seed: int, out: Path) -> dict:
    """Generate, grade and save per-question results to `out`; return `<role>/*` metrics."""
    t0 = time.perf_counter()
    prompts = [chat_prompt(tokenizer, ex["prompt"], system_prompt) for ex in examples]
    gens = generate_texts(model, tokenizer, prompts, sampling, batch_size, seed, desc=f"evaluate {role}")
    rows = []
    for ex, g in zip(examples, gens):
        answer = final_answer(g["output"], role)
        pred, correct = grader(answer, ex["answer"])
        rows.append({"id": ex["id"], "prompt": ex["prompt"], "gold": ex["answer"], "output": g["output"],
                     "answer": answer, "pred": pred, "correct": bool(correct), "tokens": g["tokens"],
                     "finished": answer is not None})
    write_jsonl(out, rows)
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    low, high = wilson_interval(correct, n)
    metrics = {
        f"{role}/correct": correct,
        f"{role}/n": n,
        f"{role}/accuracy": correct / n if n else 0.0,
        f"{role}/accuracy_ci_low": low,  # 95% Wilson interval
        f"{role}/accuracy_ci_high": high,
        f"{role}/tokens_per_answer": sum(r["tokens"] for r in rows) / n if n else 0.0,
        f"{role}/unfinished": sum(not r["finished"] for r in rows) / n if n else 0.0,
        f"{role}/eval_seconds": time.perf_counter() - t0,
    }
    log.info("evaluate %s: %d/%d correct, %.1f tokens per answer", role, correct, n,
             metrics[f"{role}/tokens_per_answer"])
    return metrics
