"""Setting up a run: everything checked and loaded before the first stage, in one function.

`prepare(cfg)` validates the config (every error at once), checks the run directory (the caller holds
its lock and has checked a resume against it: `loop.run_experiment`), loads the data, resolves the
starting pair (building the testbed pair if needed) and returns a `Run`: what
every stage of the loop shares. Nothing here trains or generates; a bad input fails here, before
any model loads.
"""

from __future__ import annotations

import gc
import importlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from thinkswitch.config import ExperimentConfig, ModelConfig
from thinkswitch.data.domains import load_domain
from thinkswitch.data.grading import Grader, get_grader
from thinkswitch.engines.hf import AUTO, Generator, resolve_backend, with_backend
from thinkswitch.engines.models import ModelPair, check_pair, pick_device
from thinkswitch.errors import ConfigError
from thinkswitch.store.cache import StageCache, checkpoint_id
from thinkswitch.store.paths import RunPaths
from thinkswitch.store.rundir import check_disk, check_writable, record_config
from thinkswitch.store.runner import StageRunner
from thinkswitch.validate import check_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint the run reads or writes: where it is, and its identity (stage-cache keys build on it)."""

    path: str
    id: str


@dataclass(frozen=True)
class Pair:
    instruct: Checkpoint
    thinking: Checkpoint


@dataclass
class Run:
    """What every stage of one run shares."""

    cfg: ExperimentConfig
    paths: RunPaths
    train: list[dict]  # training prompts (their answers are never labels)
    eval: list[dict]  # evaluation questions with gold answers
    grader: Grader
    start: Pair  # the starting pair (iteration 0)
    generator: Generator
    stage: StageRunner  # runs a stage once: markers, stage cache, timing, failure location


def resolve_pair(cfg: ModelConfig, cache_dir: Path) -> ModelPair:
    """The starting pair: the built-in testbed (built once, cached) or the configured paths/ids."""
    if cfg.testbed is not None:
        from thinkswitch.testbed.build import build_testbed

        root = build_testbed(cfg.testbed, Path(cache_dir).expanduser() / "testbed")
        return ModelPair(str(root / "instruct"), str(root / "thinking"))
    if not cfg.instruct or not cfg.thinking:
        raise ConfigError("model.instruct and model.thinking must both be set (a hub id or a local directory)")
    pair = ModelPair(cfg.instruct, cfg.thinking)
    check_pair(pair)
    return pair


def prepare(cfg: ExperimentConfig) -> Run:
    """Check everything that can be checked, load the data, resolve the pair; raise before any model loads."""
    check_config(cfg)
    paths = RunPaths(Path(cfg.run_dir))
    check_writable(paths)
    device = pick_device(cfg.device)
    train, evaluation = load_domain(cfg.domain, cfg.model)
    pair = resolve_pair(cfg.model, Path(cfg.cache_dir))
    check_disk(cfg, paths, pair.instruct, pair.thinking)
    backend = resolve_backend(cfg.generation.backend, device.type)
    if cfg.generation.backend == AUTO:
        log.info("generation.backend=auto: %s (%s)", backend, "CUDA" if device.type == "cuda" else device.type.upper())
    generation = with_backend(cfg.generation, backend) if backend != cfg.generation.backend else cfg.generation
    token_budget = plan_memory(cfg, pair, train, evaluation, device, backend)
    start = Pair(*(Checkpoint(p, checkpoint_id(p, cfg.model.revision)) for p in (pair.instruct, pair.thinking)))
    cache = StageCache(Path(cfg.stage_cache).expanduser() if cfg.stage_cache else None)
    log.info("pair: instruct=%s thinking=%s | %d training prompts, %d evaluation questions | device %s",
             pair.instruct, pair.thinking, len(train), len(evaluation), device)
    generator = Generator(model=cfg.model, generation=generation, device=device, token_budget=token_budget)
    record_config(cfg, paths)  # last: a start refused above is not a run a resume must match
    return Run(cfg=cfg, paths=paths, train=train, eval=evaluation, grader=get_grader(cfg.domain.grader),
               start=start, generator=generator, stage=StageRunner(cache))


def plan_memory(cfg: ExperimentConfig, pair: ModelPair, train: list[dict], evaluation: list[dict],
                device, backend: str = "hf") -> Optional[int]:
    """The memory plan, from the checkpoint's config and the prompts' token counts, before any model loads:
    refuses a generation that cannot fit one sequence (ConfigError with the numbers), logs the batches the
    HF backend will use and an estimate of distillation's peak; returns the HF backend's KV token budget
    (None when the backend plans its own memory, or the checkpoint's config is not at hand)."""
    from thinkswitch.engines import memory
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.hf import prompt_token_counts
    from thinkswitch.engines.models import load_tokenizer

    try:
        config = memory.load_config(pair.thinking)
    except ValueError:
        log.info("memory plan: no config.json for %s before it downloads; not planned", pair.thinking)
        return None
    dtype = memory.resolve_dtype(cfg.model.dtype, device.type)
    free = memory.free_memory(str(device))
    if cfg.method.distill:
        plan = memory.plan_distill(config, dtype=dtype, quantize_4bit=cfg.trainer.quantize_4bit, lora=cfg.trainer.lora,
                                   sft=cfg.trainer.sft, bnb=cfg.trainer.bnb, free_bytes=free, device=str(device))
        log.info("%s", memory.describe(plan))
        if plan.warning():
            log.warning("%s", plan.warning())
    if backend != "hf":  # as resolved (generation.backend=auto)
        return None
    tokenizer = load_tokenizer(pair.thinking, cfg.model)
    jobs = [("thinking", train, cfg.generation.samples_per_prompt)] if cfg.method.labels == "thinking" else []
    plans = [memory.plan_generation_for(
        pair.thinking, dtype=dtype, device=str(device), config=config, free_bytes=free,
        prompt_tokens=prompt_token_counts(tokenizer, [chat_prompt(tokenizer, ex["prompt"], cfg.domain.system_prompt)
                                                      for ex in prompts]),
        samples_per_prompt=samples, max_new_tokens=getattr(cfg.model.sampling, role).max_new_tokens,
        batch_size=cfg.generation.batch_size, key=f"model.sampling.{role}.max_new_tokens")
        for role, prompts, samples in [*jobs, ("thinking", evaluation, cfg.evaluate.samples),
                                       ("instruct", evaluation, cfg.evaluate.samples)]]
    log.info("%s", memory.describe(plans[0]))
    return plans[0].token_budget  # the same for every job: one architecture, one dtype, one device


@contextmanager
def frozen_library_heap(cfg: ExperimentConfig) -> Iterator[None]:
    """Import the libraries the stages use, collect once and `gc.freeze()` what is alive, for the run.

    The stages call `gc.collect()` to free a model before the next one loads. The imported libraries
    are ~0.5M long-lived objects; frozen, a collection skips them (0.27 s -> 0.01 s per call on the
    testbed), and so do Python's own periodic full collections during training. Unfrozen at the end.
    """
    modules = ["torch", "transformers"] + (["datasets", "peft", "trl"] if cfg.method.distill else [])
    for name in modules + (["mergekit.merge"] if cfg.method.merge else []):
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

