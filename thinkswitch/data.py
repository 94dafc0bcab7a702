"""A domain's task prompts: the training prompts (answers never used) and the evaluation set.

Each example is `{"id", "prompt", "answer"}`; `prompt` is the user message.
"""

from __future__ import annotations

from typing import Optional

from thinkswitch.config import DomainConfig, ModelConfig


def load_domain(cfg: DomainConfig, model_cfg: ModelConfig) -> tuple[list[dict], list[dict]]:
    """(training examples, evaluation examples), checked for overlap."""
    if cfg.source == "testbed":
        train, evaluation = _testbed(cfg, model_cfg)
    else:
        raise ValueError(f"domain.source: unknown source {cfg.source!r}; known: ['testbed']")
    check_disjoint(train, evaluation, cfg.name)
    return train, evaluation


def _testbed(cfg: DomainConfig, model_cfg: ModelConfig) -> tuple[list[dict], list[dict]]:
    from thinkswitch.testbed import TestbedSpec, task_examples

    if model_cfg.testbed is None:
        raise ValueError("domain=testbed needs the testbed model pair (model=testbed): its task is the testbed's")
    spec = TestbedSpec(**dict(model_cfg.testbed))
    return (task_examples(cfg.train_prompts, cfg.seed, "train", spec),
            task_examples(cfg.eval_size, cfg.seed, "eval", spec))


def check_disjoint(train: list[dict], evaluation: list[dict], name: Optional[str] = None) -> None:
    """Fail if a training prompt also appears in the evaluation set (contamination)."""
    eval_prompts = {ex["prompt"].strip() for ex in evaluation}
    leaked = [ex["id"] for ex in train if ex["prompt"].strip() in eval_prompts]
    if leaked:
        raise ValueError(f"domain {name}: {len(leaked)} training prompt(s) also in the evaluation set, "
                         f"e.g. ids {leaked[:5]}")
