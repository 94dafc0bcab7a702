"""Checks that run before any model loads; every error found is reported at once, each naming its key.

Hydra's schema already rejects unknown keys, wrong types and values outside a key's choices (the
`Choice` enums of `thinkswitch.config`) at composition. These cover the other values,
and the options passed through to the libraries, which validate themselves: we build their config
objects (`trl.SFTConfig`, `peft.LoraConfig`, `transformers.GenerationConfig`, mergekit's
`MergeConfiguration` and `MergeOptions`) from the config's sections.
"""

from __future__ import annotations

import re
from numbers import Number
from typing import Any, Callable, Iterator

from thinkswitch.config import Backend, ExperimentConfig, Quantization, SamplingConfig, TrackingMode
from thinkswitch.errors import ConfigError
from thinkswitch.store.io import parse_size

__all__ = ["ConfigError", "check_config"]


def check_config(cfg: ExperimentConfig, *, libraries: bool = True) -> None:
    """Raise one ConfigError listing every value that cannot work (one per line). `libraries=False`: the checks
    that import no library (no torch, TRL, peft, mergekit): the values' own ranges, what `thinkswitch-plan` checks
    in its second (the run checks the rest when it starts)."""
    errors = [e for check, needs_libraries in CHECKS if libraries or not needs_libraries for e in check(cfg)]
    if errors:
        raise ConfigError("; ".join(errors) if len(errors) == 1 else f"{len(errors)} errors: " + "; ".join(errors))


def _t(t: Any, key: str = "merge.t") -> Iterator[str]:
    """`t` in [0, 1]: a number, a list of numbers (a gradient) or mergekit's `[{filter, value}]` form."""
    if isinstance(t, bool) or t is None:
        yield f"{key}: expected a number in [0, 1] or a list, got {t!r}"
    elif isinstance(t, Number):
        if not 0.0 <= float(t) <= 1.0:
            yield f"{key}: {t} is outside [0, 1]"
    elif isinstance(t, list) and t:
        for i, item in enumerate(t):
            if isinstance(item, dict):
                if set(item) - {"filter", "value"} or "value" not in item:
                    yield f"{key}[{i}]: expected {{filter: ..., value: ...}}, got keys {sorted(item)}"
                else:
                    yield from _t(item["value"], f"{key}[{i}].value")
            else:
                yield from _t(item, f"{key}[{i}]")
    else:
        yield f"{key}: expected a number in [0, 1] or a non-empty list, got {t!r}"


def _one_of(key: str, value: Any, allowed) -> Iterator[str]:
    if value not in allowed:
        yield f"{key}: expected one of {list(allowed)}, got {value!r}"


def _at_least(key: str, value: Any, low: float) -> Iterator[str]:
    if value < low:
        yield f"{key}: must be >= {low}, got {value}"


def run_settings(cfg: ExperimentConfig) -> Iterator[str]:
    from thinkswitch.engines.models import check_dtype

    yield from _at_least("iterations", cfg.iterations, 0)
    if cfg.num_threads is not None:
        yield from _at_least("num_threads", cfg.num_threads, 1)
    yield from check_dtype(cfg.model.dtype)
    try:
        parse_size(cfg.shard_size)
    except ValueError as e:
        yield f"shard_size: {e}"


def model_and_domain(cfg: ExperimentConfig) -> Iterator[str]:
    from thinkswitch.data.domains import check_template
    from thinkswitch.data.grading import GRADERS

    if cfg.model.testbed is None and not (cfg.model.instruct and cfg.model.thinking):
        yield "model.instruct / model.thinking: both must be set (hub id or local directory)"
    if cfg.model.testbed is not None:
        for key in ("instruct", "thinking", "revision"):
            if getattr(cfg.model, key) is not None:
                yield (f"model.{key}: ignored by model={cfg.model.name} (the built-in testbed pair); for your own "
                       f"checkpoints use model=local model.instruct=... model.thinking=...")
    for key in ("train_prompts", "eval_size"):
        yield from _at_least(f"domain.{key}", getattr(cfg.domain, key), 1)
    if cfg.domain.grader not in GRADERS:
        yield f"domain.grader: unknown grader {cfg.domain.grader!r}; known: {sorted(GRADERS)}"
    for split in ("train", "eval"):
        yield from _gold_regex(getattr(cfg.domain, split).gold_regex, f"domain.{split}.gold_regex")
    yield from check_template(cfg.domain)


def _gold_regex(pattern: Any, key: str) -> Iterator[str]:
    """A gold regex compiles and has exactly one group (the gold answer)."""
    if pattern is None:
        return
    try:
        groups = re.compile(pattern).groups
    except re.error as e:
        yield f"{key}: {pattern!r} is not a valid regular expression ({e})"
        return
    if groups != 1:
        yield (f"{key}: {pattern!r} has {groups} groups; it needs exactly one (the gold answer), "
               "e.g. '####\\s*(-?\\d+)'; write other groups as (?:...)")


def device(cfg: ExperimentConfig) -> Iterator[str]:
    from thinkswitch.engines.models import check_device

    yield from check_device(cfg.device)


def sampling_ranges(cfg: ExperimentConfig) -> Iterator[str]:
    """The ranges transformers' GenerationConfig leaves open, for each mode."""
    for role in ("thinking", "instruct"):
        yield from _sampling_ranges(f"model.sampling.{role}", getattr(cfg.model.sampling, role))


def sampling(cfg: ExperimentConfig) -> Iterator[str]:
    """Each mode's sampling, as transformers' GenerationConfig validates it."""
    from transformers import GenerationConfig

    from thinkswitch.engines.base import sampling_kwargs

    for role in ("thinking", "instruct"):
        key, s = f"model.sampling.{role}", getattr(cfg.model.sampling, role)
        try:
            GenerationConfig(**{k: v for k, v in sampling_kwargs(s).items() if v is not None}).validate(strict=True)
        except ValueError as e:
            yield f"{key}: {' '.join(str(e).split())}"


def _sampling_ranges(key: str, s: SamplingConfig) -> Iterator[str]:
    yield from _at_least(f"{key}.max_new_tokens", s.max_new_tokens, 1)
    if not s.do_sample:
        return
    if s.temperature is not None and s.temperature <= 0:
        yield f"{key}.temperature: must be > 0 when sampling, got {s.temperature}"
    if s.top_p is not None and not 0 < s.top_p <= 1:
        yield f"{key}.top_p: must be in (0, 1], got {s.top_p}"
    if s.top_k is not None and s.top_k < 0:
        yield f"{key}.top_k: must be >= 0, got {s.top_k}"
    if s.min_p is not None and not 0 <= s.min_p <= 1:
        yield f"{key}.min_p: must be in [0, 1], got {s.min_p}"


def generation_sizes(cfg: ExperimentConfig) -> Iterator[str]:
    for key in ("batch_size", "samples_per_prompt"):
        yield from _at_least(f"generation.{key}", getattr(cfg.generation, key), 1)
    if cfg.generation.backend not in Backend.values():
        yield f"generation.backend: unknown backend {cfg.generation.backend!r}; known: {Backend.values()}"
    yield from _one_of("generation.quantization", cfg.generation.quantization, Quantization.values())
    yield from _at_least("evaluate.samples", cfg.evaluate.samples, 1)


def generation(cfg: ExperimentConfig) -> Iterator[str]:
    """The engine's options as it resolves on this machine (vLLM's, checked without importing vLLM)."""
    from thinkswitch.engines.base import resolve_backend
    from thinkswitch.engines.models import check_device, pick_device

    known = cfg.generation.backend in Backend.values()
    device = "cuda" if not check_device(cfg.device) and pick_device(cfg.device).type == "cuda" else "cpu"
    if known and resolve_backend(cfg.generation.backend, device) == Backend.vllm:  # checked without importing vLLM
        from thinkswitch.engines.vllm_options import check_vllm_options, nf4_error

        if cfg.generation.quantization == Quantization.nf4 and nf4_error():
            yield nf4_error()
        else:
            yield from check_vllm_options(dict(cfg.generation.vllm))


def method_and_labels(cfg: ExperimentConfig) -> Iterator[str]:
    if not (cfg.method.distill or cfg.method.merge):
        yield "method: distill and merge are both off; nothing would change"
    if not 0.0 <= cfg.distill.min_agreement <= 1.0:
        yield f"distill.min_agreement: must be in [0, 1], got {cfg.distill.min_agreement}"


def merge_t(cfg: ExperimentConfig) -> Iterator[str]:
    yield from _t(cfg.merge.t)


def merge(cfg: ExperimentConfig) -> Iterator[str]:
    from thinkswitch.stages import merge as merge_stage

    if not list(_t(cfg.merge.t)):
        yield from merge_stage.check(cfg.merge, parse_size(cfg.shard_size) if _size_ok(cfg.shard_size) else 10**9)


def _size_ok(value: Any) -> bool:
    try:
        parse_size(value)
        return True
    except ValueError:
        return False


def trainer_values(cfg: ExperimentConfig) -> Iterator[str]:
    if not cfg.method.distill:
        return
    lora, sft = cfg.trainer.lora, cfg.trainer.sft
    if "r" in lora and (not isinstance(lora["r"], int) or lora["r"] < 1):
        yield f"trainer.lora.r: must be an integer >= 1, got {lora['r']!r}"
    for key in ("learning_rate", "num_train_epochs"):
        if key in sft and isinstance(sft[key], Number) and sft[key] <= 0:
            yield f"trainer.sft.{key}: must be > 0, got {sft[key]}"
    if cfg.trainer.checkpoint_minutes < 0:
        yield f"trainer.checkpoint_minutes: must be >= 0 (0: no checkpoints), got {cfg.trainer.checkpoint_minutes}"


def trainer(cfg: ExperimentConfig) -> Iterator[str]:
    """peft's LoraConfig and TRL's SFTConfig built from the pass-through dicts (they validate themselves)."""
    if not cfg.method.distill:
        return
    from peft import LoraConfig
    from trl import SFTConfig

    lora, sft = cfg.trainer.lora, cfg.trainer.sft
    try:
        LoraConfig(**lora)
    except (TypeError, ValueError) as e:
        yield f"trainer.lora: {e}"
    try:  # names and types only: precision flags are checked against the device when training starts; use_cpu:
        # building it sets up accelerate's device, which on CUDA would start CUDA here (`torch.cuda.set_device(0)`)
        # before `engines.devices.choose_device` can narrow CUDA_VISIBLE_DEVICES (the trainer's own config resets it)
        SFTConfig(**{**sft, "output_dir": "unused", "report_to": [], "bf16": False, "fp16": False, "use_cpu": True})
    except (TypeError, ValueError) as e:
        yield f"trainer.sft: {' '.join(str(e).split())}"


def merge_device(cfg: ExperimentConfig) -> Iterator[str]:
    """`distill.merge_device` only where it applies: after QLoRA (a LoRA adapter is merged in place, where it
    trained), and `cuda` only on a run that is on CUDA."""
    from thinkswitch.engines.models import check_device, pick_device

    setting = str(getattr(cfg.distill.merge_device, "value", cfg.distill.merge_device))
    if setting == "auto" or not cfg.method.distill:
        return
    if not cfg.trainer.quantize_4bit:
        yield (f"distill.merge_device={setting}: applies after QLoRA only (trainer.quantize_4bit); trainer="
               f"{cfg.trainer.name} merges the adapter in place, where it trained; leave it at auto")
    elif setting == "cuda" and not check_device(cfg.device) and pick_device(cfg.device).type != "cuda":
        yield f"distill.merge_device=cuda: the run's device is {pick_device(cfg.device).type} (device={cfg.device})"


def tracking_and_cost(cfg: ExperimentConfig) -> Iterator[str]:
    """The W&B mode as the tracker will resolve it (`tracking.mode`, else `$WANDB_MODE`), and the price."""
    from thinkswitch.analysis.tracking import tracking_mode

    mode, origin = tracking_mode(cfg.tracking)
    yield from _one_of(origin, mode, TrackingMode.values())
    if cfg.tracking.init_timeout <= 0:
        yield f"tracking.init_timeout: must be > 0 seconds, got {cfg.tracking.init_timeout}"
    if cfg.cost.gpu_hour_usd is not None:
        yield from _at_least("cost.gpu_hour_usd", cfg.cost.gpu_hour_usd, 0)


# (check, whether it imports a library: torch, transformers, TRL, peft, mergekit), in the order errors are listed
CHECKS: tuple[tuple[Callable[[ExperimentConfig], Iterator[str]], bool], ...] = (
    (run_settings, False), (device, True), (model_and_domain, False), (sampling_ranges, False), (sampling, True),
    (generation_sizes, False), (generation, True), (method_and_labels, False), (merge_t, False), (merge, True),
    (trainer_values, False), (trainer, True), (merge_device, True), (tracking_and_cost, False))
