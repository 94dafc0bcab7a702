"""Setting up a run: everything checked and loaded before the first stage, in one function.

`prepare(cfg)` validates the config (every error at once), checks the run directory (the caller holds
its lock and has checked a resume against it: `loop.run_experiment`), loads the data, resolves the
starting pair (building the testbed pair if needed) and returns a `Run`: what
every stage of the loop shares. `device=auto` on a machine with GPUs gives the run one of its own
(`engines.devices.choose_device`: held until `Run.close`), so the jobs of a parallel sweep each get a free GPU.
Nothing here trains or generates; a bad input fails here, before any model loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from thinkswitch.config import Backend, ExperimentConfig, Labels, ModelConfig, Role
from thinkswitch.data.domains import load_domain
from thinkswitch.engines.base import Generator, resolve_backend, with_backend
from thinkswitch.engines.devices import bnb_cuda_error, choose_device, triton_build_error
from thinkswitch.engines.models import ModelPair, check_pair, is_local
from thinkswitch.errors import ConfigError, DataError
from thinkswitch.sizing.run_plan import distills, plan_memory, with_vllm_context
from thinkswitch.stages.inputs import Artifact, Engine
from thinkswitch.stages.merge import check_filters as merge_filters
from thinkswitch.stages.strip import missing_gold
from thinkswitch.store.cache import StageCache, checkpoint_id
from thinkswitch.store.io import parse_size
from thinkswitch.store.locks import HolderLock
from thinkswitch.store.paths import RunPaths
from thinkswitch.store.rundir import check_disk, check_writable, record_config
from thinkswitch.store.runner import StageRunner
from thinkswitch.validate import check_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """The two checkpoints of an iteration: where they are, and what they are (stage keys build on their ids)."""

    instruct: Artifact
    thinking: Artifact


@dataclass
class Run:
    """What every stage of one run shares."""

    cfg: ExperimentConfig
    paths: RunPaths
    train: list[dict]  # training prompts (their answers are never labels)
    eval: list[dict]  # evaluation questions with gold answers
    start: Pair  # the starting pair (iteration 0)
    generator: Generator
    engine: Engine  # the settings of `generator` (and device) that change outputs: part of the stages' keys
    stage: StageRunner  # runs a stage once: markers, stage cache, timing, failure location
    shard_size: int  # bytes: the safetensors shard size of the checkpoints the run writes (`shard_size`, parsed)
    device_lock: Optional[HolderLock] = None  # device=auto: this run's GPU, held until close()

    def close(self) -> None:
        """Let go of what the run holds (its GPU: another job may take it)."""
        if self.device_lock is not None:
            self.device_lock.release()
            self.device_lock = None


def resolve_pair(cfg: ModelConfig, cache_dir: Path) -> ModelPair:
    """The starting pair as local directories: the built-in testbed (built once, cached), or the configured
    paths, a hub id resolved here, once, to its snapshot in the hub cache (`thinkswitch.hub`, at `model.revision`:
    downloaded if missing; offline, a missing id is one line saying what to download). Every stage then reads
    the local directory; the stage keys stay those of the id and revision (`start_pair`)."""
    if cfg.testbed is not None:
        from thinkswitch.testbed.build import build_testbed

        root = build_testbed(cfg.testbed, Path(cache_dir).expanduser() / "testbed")
        return ModelPair(str(root / "instruct"), str(root / "thinking"))
    if not cfg.instruct or not cfg.thinking:
        raise ConfigError("model.instruct and model.thinking must both be set (a hub id or a local directory)")
    from thinkswitch.hub import resolve_model

    refs = [getattr(cfg, role) for role in Role]
    pair = ModelPair(*(ref if is_local(ref) else resolve_model(ref, cfg.revision, f"model.{role}")
                       for ref, role in zip(refs, Role)))
    check_pair(pair)
    return pair


def start_pair(cfg: ModelConfig, pair: ModelPair) -> Pair:
    """The starting pair as artifacts: each checkpoint's local directory, identified by its hub id and revision
    (a hub model, wherever its cache is) or by its files (a local directory)."""
    def artifact(role: Role) -> Artifact:
        path, ref = getattr(pair, role), getattr(cfg, role)
        return Artifact(path, checkpoint_id(ref if ref and not is_local(ref) else path, cfg.revision))

    return Pair(*(artifact(role) for role in Role))


def prepare(cfg: ExperimentConfig) -> Run:
    """Check everything that can be checked, load the data, resolve the pair; raise before any model loads."""
    check_config(cfg)
    paths = RunPaths(Path(cfg.run_dir))
    check_writable(paths)
    device, device_lock = choose_device(cfg.device, Path(cfg.cache_dir), str(paths.root))
    try:
        run = _prepare(cfg, paths, device)
    except BaseException:
        if device_lock is not None:
            device_lock.release()
        raise
    run.device_lock = device_lock
    return run


def _prepare(cfg: ExperimentConfig, paths: RunPaths, device) -> Run:
    train, evaluation = load_domain(cfg.domain, cfg.model)
    if cfg.method.distill and cfg.method.labels == Labels.gold and missing_gold(train):
        raise DataError(missing_gold(train))  # before the labels are generated, not after
    pair = resolve_pair(cfg.model, Path(cfg.cache_dir))
    check_disk(cfg, paths, pair.instruct, pair.thinking)
    if cfg.method.merge and (errors := merge_filters(cfg.merge, pair.thinking)):
        raise ConfigError("; ".join(errors))
    if distills(cfg) and (error := triton_build_error(device)):
        raise ConfigError(error)
    four_bit = (distills(cfg) and cfg.trainer.quantize_4bit) or cfg.generation.quantization == "nf4"
    if four_bit and (error := bnb_cuda_error(device)):
        raise ConfigError(error)
    backend = resolve_backend(cfg.generation.backend, device.type)
    if cfg.generation.backend == Backend.auto:
        log.info("generation.backend=auto: %s (%s)", backend, "CUDA" if device.type == "cuda" else device.type.upper())
    generation = with_backend(cfg.generation, backend) if backend != cfg.generation.backend else cfg.generation
    token_budget = plan_memory(cfg, pair, train, evaluation, device, backend)
    engine_generation = generation
    if backend == Backend.vllm:  # the plan's number is the context vLLM needs: max_model_len where unset
        engine_generation, token_budget = with_vllm_context(generation, token_budget), None
    start = start_pair(cfg.model, pair)
    cache = StageCache(Path(cfg.stage_cache).expanduser() if cfg.stage_cache else None)
    cache.turns.check()  # locks in the cache that do not exclude: said, and this run computes alone
    log.info("pair: instruct=%s thinking=%s | %d training prompts, %d evaluation questions | device %s",
             pair.instruct, pair.thinking, len(train), len(evaluation), device)
    generator = Generator(model=cfg.model, generation=engine_generation, device=device, token_budget=token_budget)
    record_config(cfg, paths)  # last: a start refused above is not a run a resume must match
    return Run(cfg=cfg, paths=paths, train=train, eval=evaluation, start=start, generator=generator,
               engine=Engine.of(cfg, device, generation), stage=StageRunner(cache),
               shard_size=parse_size(cfg.shard_size))
