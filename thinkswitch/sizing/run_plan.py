"""The run's memory plan at start: its generation jobs (each stage's prompts, chat-formatted and counted) sized
against the device before any model loads (`plan_memory`, called by `setup`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

from thinkswitch.config import Backend, ExperimentConfig, Role
from thinkswitch.engines.models import ModelPair
from thinkswitch.errors import ConfigError

log = logging.getLogger(__name__)
# The order a plan lists the checkpoints' generation jobs in: the thinking checkpoint's first (its traces bound the
# memory), as `thinkswitch-plan`'s tables always have.
PLAN_ORDER = (Role.thinking, Role.instruct)

_COUNTED: dict[tuple, list[int]] = {}  # prompt token counts by (tokenizer, system prompt, prompts)


@dataclass(frozen=True)
class Job:
    """One generation of a run: the labels, or one checkpoint's evaluation answers. The run and `thinkswitch-plan`
    both build their jobs with `jobs_for`: the run from its prompts' token counts, the plan from its assumed ones."""

    stage: str  # generate | evaluate
    role: Role
    prompt_tokens: tuple[int, ...]  # each prompt's tokens, chat-formatted
    samples: int
    max_new: int

    @property
    def name(self) -> str:
        return self.stage if self.stage == "generate" else f"{self.stage} {self.role}"

    @property
    def key(self) -> str:
        """The setting that bounds its traces."""
        return f"model.sampling.{self.role}.max_new_tokens"

    @property
    def longest_prompt(self) -> int:
        return max(self.prompt_tokens, default=0)

    @property
    def request(self) -> tuple[str, str, int, int]:
        """What vLLM's context rules read of it (`engines.vllm_options`): what, key, longest prompt, max_new_tokens."""
        return self.name, self.key, self.longest_prompt, self.max_new

    @property
    def sequences(self) -> int:
        return len(self.prompt_tokens) * self.samples


def distills(cfg: ExperimentConfig) -> bool:
    """Whether the run generates labels and distils them: every method that distils (gold_oracle filters its labels
    first), once it iterates (`iterations=0` only evaluates)."""
    return bool(cfg.method.distill and cfg.iterations)


def jobs_for(cfg: ExperimentConfig, train_tokens: Sequence[int], eval_tokens: Sequence[int]) -> list[Job]:
    """The run's generations: the labels (every method that distils generates them, gold_oracle then filters them;
    none when `iterations=0`), then each checkpoint's evaluation answers, thinking first (`PLAN_ORDER`)."""
    s = cfg.model.sampling
    jobs = []
    if distills(cfg):
        jobs.append(Job("generate", Role.thinking, tuple(train_tokens), cfg.generation.samples_per_prompt,
                        s.thinking.max_new_tokens))
    return jobs + [Job("evaluate", role, tuple(eval_tokens), cfg.evaluate.samples, getattr(s, role).max_new_tokens)
                   for role in PLAN_ORDER]


def generation_jobs(cfg: ExperimentConfig, tokenizer, train: list[dict], evaluation: list[dict]) -> list[Job]:
    """The run's generations (`jobs_for`), with its prompts' token counts once chat-formatted. Each prompt set is
    tokenized once (both models answer the same evaluation questions), and once per process (`_COUNTED`: a
    multirun's jobs plan the same prompts)."""
    from thinkswitch.engines.base import prompt_token_counts
    from thinkswitch.engines.chat import chat_prompt

    def counts(prompts: list[dict]) -> list[int]:
        key = (tokenizer.name_or_path, len(tokenizer), str(tokenizer.chat_template), cfg.domain.system_prompt,
               tuple(ex["prompt"] for ex in prompts))
        if key not in _COUNTED:
            if len(_COUNTED) >= 8:
                _COUNTED.clear()
            _COUNTED[key] = prompt_token_counts(
                tokenizer, [chat_prompt(tokenizer, ex["prompt"], cfg.domain.system_prompt) for ex in prompts])
        return list(_COUNTED[key])

    return jobs_for(cfg, counts(train) if distills(cfg) else [], counts(evaluation))


def plan_memory(cfg: ExperimentConfig, pair: ModelPair, train: list[dict], evaluation: list[dict],
                device, backend: Backend = Backend.hf) -> Optional[int]:
    """The memory plan, from the checkpoint's config and the prompts' token counts, before any model loads:
    refuses a generation that cannot fit one sequence (ConfigError with the numbers), logs the batches the
    HF backend will use and an estimate of distillation's peak; returns the HF backend's KV token budget
    (None when the backend plans its own memory, or the checkpoint's config is not at hand; on vLLM the context
    its engine needs: `with_vllm_context`). On vLLM: refuses a
    `generation.vllm.max_model_len` shorter than a prompt + its max_new_tokens (`vllm_options.check_context`);
    on `cb`: refuses a trace its paged cache cannot hold (`plan_cb`)."""
    from thinkswitch.engines.free_memory import free_memory
    from thinkswitch.engines.models import load_tokenizer
    from thinkswitch.sizing import memory
    from thinkswitch.sizing.shapes import load_config, resolve_dtype

    try:
        config = load_config(pair.thinking)
    except ValueError:
        log.info("memory plan: no config.json for %s before it downloads; not planned", pair.thinking)
        return None
    dtype = resolve_dtype(cfg.model.dtype, device.type)
    free = free_memory(str(device))
    if distills(cfg):
        plan_distillation(cfg, config, dtype, device, free)
    if backend not in (Backend.hf, Backend.vllm, Backend.cb):  # as resolved (generation.backend=auto)
        return None
    tokenizer = load_tokenizer(pair.thinking, cfg.model)
    jobs = generation_jobs(cfg, tokenizer, train, evaluation)
    if backend == Backend.vllm:  # vLLM plans its own memory; its context must hold every generation
        from thinkswitch.engines.vllm_options import check_context, context_for

        contexts = [job.request for job in jobs]
        errors = check_context(cfg.generation.vllm, config, contexts)
        if errors:
            raise ConfigError("; ".join(errors))
        return context_for(contexts)
    if backend == "cb":
        plan_cb(cfg, pair, config, jobs, dtype, device, free)
        return None
    plans = [memory.plan_generation_for(
        pair.thinking, dtype=dtype, device=str(device), config=config, free_bytes=free,
        prompt_tokens=job.prompt_tokens, samples_per_prompt=job.samples, max_new_tokens=job.max_new,
        batch_size=cfg.generation.batch_size, key=job.key, quantization=cfg.generation.quantization) for job in jobs]
    log.info("%s", plans[0].describe())
    return plans[0].token_budget  # the same for every job: one architecture, one dtype, one device


def plan_distillation(cfg: ExperimentConfig, config: dict, dtype: str, device, free: int,
                      host_available: Optional[int] = None):
    """Distillation's memory estimate, logged (a warning above the free memory), and the host RAM a CPU adapter
    merge needs against what the host has now (`host_available`: MemAvailable unless given): a ConfigError naming
    `distill.merge_device` before anything is spent when it cannot fit."""
    from thinkswitch.engines.free_memory import free_memory
    from thinkswitch.sizing.distill_memory import check_merge_host_memory, plan_distill
    from thinkswitch.store.io import parse_size

    plan = plan_distill(config, dtype=dtype, quantize_4bit=cfg.trainer.quantize_4bit, lora=cfg.trainer.lora,
                        sft=cfg.trainer.sft, bnb=cfg.trainer.bnb, free_bytes=free, device=str(device),
                        merge_device=cfg.distill.merge_device, shard_bytes=parse_size(cfg.shard_size))
    log.info("%s", plan.describe())
    if plan.warning():
        log.warning("%s", plan.warning())
    if plan.host_bytes:
        if host_available is None:
            host_available = free if device.type == "cpu" else free_memory("cpu")
        check_merge_host_memory(plan, host_available)
    return plan


def plan_cb(cfg: ExperimentConfig, pair: ModelPair, config: dict, jobs: list[Job], dtype: str, device,
            free: int) -> None:
    """`cb`'s paged cache for each generation, as transformers will size it (`engines.paged_cache`), from free memory
    before the weights load: refuses (ConfigError, the numbers, the `max_new_tokens` that fits) a run whose
    longest trace cannot fit, before the first stage spends anything."""
    from thinkswitch.sizing.weights import checkpoint_tensors, generation_weight_bytes

    tensors, _ = checkpoint_tensors(pair.thinking, config)
    weights = generation_weight_bytes(tensors, dtype, cfg.generation.quantization)
    for job in jobs:
        log.info("%s: %s", job.name, paged_cache_for(cfg, job, config, dtype, str(device), free, weights).describe())


def paged_cache_for(cfg: ExperimentConfig, job: Job, config: dict, dtype: str, device: str, free: int, weights: int):
    """The paged cache transformers builds for `job` from `free` bytes (`weights` still to load), or a ConfigError
    (the numbers, the `max_new_tokens` that fits) when its longest trace cannot fit. The run's check (`plan_cb`) and
    `thinkswitch-plan`'s (`plan.slots`)."""
    from thinkswitch.engines.paged_cache import check_paged, plan_paged_cache

    plan = plan_paged_cache(config, dtype=dtype, device=device, free_bytes=free, weight_bytes=weights,
                            prompt_tokens=job.prompt_tokens, samples=job.samples, max_new_tokens=job.max_new,
                            do_sample=bool(getattr(cfg.model.sampling, job.role).do_sample))
    return check_paged(plan, job.key, cfg.generation.quantization == "nf4")


def with_vllm_context(generation, context: Optional[int]):
    """`generation` with `vllm.max_model_len` set to `context` (the longest prompt + its budget, `plan_memory`) where
    it is unset: vLLM would otherwise size its start-up for the model's whole context (262,144 tokens for the
    paper's pair). For the engine only: the stage keys keep the configured options."""
    import dataclasses

    options = dict(generation.vllm or {})
    if context is None or options.get("max_model_len") is not None:
        return generation
    return dataclasses.replace(generation, vllm={**options, "max_model_len": int(context)})
