"""The testbed pair's held-out score (what its manifest records): greedy accuracy and tokens per answer,
generated and graded as the loop's evaluation does."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from thinkswitch.config import Role, SamplingConfig, TestbedSpec
from thinkswitch.data.testbed_task import task_examples
from thinkswitch.testbed.shipping import MANIFEST

logger = logging.getLogger(__name__)

EVAL_N = 200
EVAL_SEED = 1234


def evaluate_testbed(path: str | Path, n: int = EVAL_N, spec: TestbedSpec | None = None, seed: int = EVAL_SEED,
                     batch_size: int = 100, variants: tuple[str, ...] = tuple(Role)) -> dict:
    """Greedy held-out accuracy and mean generated tokens per answer (eos included) per variant, generated
    and graded as the loop's evaluation does (`generate_texts`, the `last_integer` grader)."""
    import torch
    import transformers

    from thinkswitch.data.grading import get_grader
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.hf import generate_texts
    from thinkswitch.stages.evaluate import final_answer

    path = Path(path)
    if spec is None:
        spec = TestbedSpec(**json.loads((path / MANIFEST).read_text())["spec"])
    examples = task_examples(n, seed, "eval", spec)
    grade = get_grader("last_integer")
    greedy = SamplingConfig(do_sample=False, max_new_tokens=8 * spec.max_digits + 16)
    results = {}
    for variant in variants:
        tok = transformers.AutoTokenizer.from_pretrained(path / variant, padding_side="left")
        model = transformers.AutoModelForCausalLM.from_pretrained(path / variant, dtype=torch.float32).eval()
        prompts = [chat_prompt(tok, ex["prompt"]) for ex in examples]
        gens = generate_texts(model, tok, prompts, greedy, batch_size, seed, desc=f"testbed {variant}")
        correct = sum(grade(final_answer(g["output"], variant), ex["answer"])[1] for g, ex in zip(gens, examples))
        results[variant] = {"accuracy": correct / n, "mean_tokens": sum(g["tokens"] for g in gens) / n}
        logger.info("testbed %s: held-out accuracy %.3f, %.1f tokens/answer", variant,
                    results[variant]["accuracy"], results[variant]["mean_tokens"])
    return results
