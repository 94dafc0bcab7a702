"""Checks that run before any model loads, each naming the config key at fault.

Hydra's schema already rejects unknown keys and wrong types; these cover values and the options
passed through to the libraries (which validate themselves: we just build their config objects).
"""

from __future__ import annotations

from numbers import Number
from typing import Any

from omegaconf import OmegaConf

from thinkswitch.config import ExperimentConfig
from thinkswitch.grading import get_grader
from thinkswitch.io import parse_size


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


def _check_t(t: Any, key: str = "merge.t") -> None:
    """`t` in [0, 1]: a number, a list of numbers (a gradient) or mergekit's `[{filter, value}]` form."""
    if OmegaConf.is_config(t):
        t = OmegaConf.to_container(t)
    if isinstance(t, bool) or t is None:
        raise ConfigError(f"{key}: expected a number in [0, 1] or a list, got {t!r}")
    if isinstance(t, Number):
        if not 0.0 <= float(t) <= 1.0:
            raise ConfigError(f"{key}: {t} is outside [0, 1]")
        return
    if isinstance(t, list) and t:
        for i, item in enumerate(t):
            if isinstance(item, dict):
                unknown = set(item) - {"filter", "value"}
                if unknown or "value" not in item:
                    raise ConfigError(f"{key}[{i}]: expected {{filter: ..., value: ...}}, got keys {sorted(item)}")
                _check_t(item["value"], f"{key}[{i}].value")
            else:
                _check_t(item, f"{key}[{i}]")
        return
    raise ConfigError(f"{key}: expected a number in [0, 1] or a non-empty list, got {t!r}")


def check_config(cfg: ExperimentConfig) -> None:
    """Raise ConfigError for the first value that cannot work."""
    if cfg.iterations < 1:
        raise ConfigError(f"iterations: must be >= 1, got {cfg.iterations}")
    for key in ("train_prompts", "eval_size"):
        if getattr(cfg.domain, key) < 1:
            raise ConfigError(f"domain.{key}: must be >= 1, got {getattr(cfg.domain, key)}")
    for key in ("batch_size", "samples_per_prompt"):
        if getattr(cfg.generation, key) < 1:
            raise ConfigError(f"generation.{key}: must be >= 1, got {getattr(cfg.generation, key)}")
    from thinkswitch.generate import BACKENDS

    if cfg.generation.backend not in BACKENDS:
        raise ConfigError(f"generation.backend: unknown backend {cfg.generation.backend!r}; known: {sorted(BACKENDS)}")
    if cfg.generation.backend == "vllm":  # without importing vLLM (it lives in .venv-vllm)
        from thinkswitch.vllm_backend import check_vllm_options

        errors = check_vllm_options(OmegaConf.to_container(cfg.generation.vllm) if OmegaConf.is_config(
            cfg.generation.vllm) else dict(cfg.generation.vllm))
        if errors:
            raise ConfigError("; ".join(errors))
    _check_t(cfg.merge.t)
    if cfg.merge.base not in ("current", "initial"):
        raise ConfigError(f"merge.base: expected 'current' or 'initial', got {cfg.merge.base!r}")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device: expected auto, cpu or cuda[:N], got {cfg.device!r}")
    if cfg.keep_checkpoints not in ("all", "last", "none"):
        raise ConfigError(f"keep_checkpoints: expected all, last or none, got {cfg.keep_checkpoints!r}")
    try:
        parse_size(cfg.shard_size)
    except ValueError as e:
        raise ConfigError(f"shard_size: {e}") from None
    if cfg.method.labels not in ("thinking", "gold"):
        raise ConfigError(f"method.labels: expected 'thinking' or 'gold', got {cfg.method.labels!r}")
    if not (cfg.method.distill or cfg.method.merge):
        raise ConfigError("method: distill and merge are both off; nothing would change (evaluate only with "
                          "iterations=... is not a method)")
    for key, allowed in (("filter", ("none", "majority")), ("target", ("raw", "canonical"))):
        if getattr(cfg.distill, key) not in allowed:
            raise ConfigError(f"distill.{key}: expected one of {list(allowed)}, got {getattr(cfg.distill, key)!r}")
    if not 0.0 <= cfg.distill.min_agreement <= 1.0:
        raise ConfigError(f"distill.min_agreement: must be in [0, 1], got {cfg.distill.min_agreement}")
    if cfg.evaluate.samples < 1:
        raise ConfigError(f"evaluate.samples: must be >= 1, got {cfg.evaluate.samples}")
    try:
        get_grader(cfg.domain.grader)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.model.testbed is None and not (cfg.model.instruct and cfg.model.thinking):
        raise ConfigError("model.instruct / model.thinking: both must be set (hub id or local directory)")
    check_library_options(cfg)


def check_library_options(cfg: ExperimentConfig) -> None:
    """Build peft's LoraConfig and TRL's SFTConfig from the pass-through dicts (they validate)."""
    from peft import LoraConfig

    try:
        LoraConfig(**OmegaConf.to_container(cfg.trainer.lora))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"trainer.lora: {e}") from None
    from trl import SFTConfig

    try:
        options = OmegaConf.to_container(cfg.trainer.sft)
        # names and types only: precision flags are checked against the device when training starts
        SFTConfig(**{**options, "output_dir": "unused", "report_to": [], "bf16": False, "fp16": False})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"trainer.sft: {e}") from None
