"""Setting up a run: everything checked and loaded before the first stage, in one function.

`prepare(cfg)` validates the config (every error at once), checks the run directory (the caller holds
its lock and has checked a resume against it: `loop.run_experiment`), loads the data, resolves the
starting pair (building the testbed pair if needed) and returns a `Run`: what
every stage of the loop shares. `device=auto` on a machine with GPUs gives the run one of its own
(`choose_device`: held until `Run.close`), so the jobs of a parallel sweep each get a free GPU.
Nothing here trains or generates; a bad input fails here, before any model loads.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from thinkswitch.config import ExperimentConfig, ModelConfig
from thinkswitch.data.domains import load_domain
from thinkswitch.data.grading import Grader, get_grader
from thinkswitch.engines.hf import AUTO, Generator, resolve_backend, with_backend
from thinkswitch.engines.models import ModelPair, check_pair, pick_device
from thinkswitch.errors import ConfigError
from thinkswitch.stages.inputs import Artifact, Engine
from thinkswitch.stages.merge import check_filters as merge_filters
from thinkswitch.store.cache import StageCache, checkpoint_id
from thinkswitch.store.locks import HolderLock, claim_one
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
    grader: Grader
    start: Pair  # the starting pair (iteration 0)
    generator: Generator
    engine: Engine  # the settings of `generator` (and device) that change outputs: part of the stages' keys
    stage: StageRunner  # runs a stage once: markers, stage cache, timing, failure location
    device_lock: Optional[HolderLock] = None  # device=auto: this run's GPU, held until close()

    def close(self) -> None:
        """Let go of what the run holds (its GPU: another job may take it)."""
        if self.device_lock is not None:
            self.device_lock.release()
            self.device_lock = None


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
    pair = resolve_pair(cfg.model, Path(cfg.cache_dir))
    check_disk(cfg, paths, pair.instruct, pair.thinking)
    if cfg.method.merge and (errors := merge_filters(cfg.merge, pair.thinking)):
        raise ConfigError("; ".join(errors))
    backend = resolve_backend(cfg.generation.backend, device.type)
    if cfg.generation.backend == AUTO:
        log.info("generation.backend=auto: %s (%s)", backend, "CUDA" if device.type == "cuda" else device.type.upper())
    generation = with_backend(cfg.generation, backend) if backend != cfg.generation.backend else cfg.generation
    token_budget = plan_memory(cfg, pair, train, evaluation, device, backend)
    start = Pair(*(Artifact(p, checkpoint_id(p, cfg.model.revision)) for p in (pair.instruct, pair.thinking)))
    cache = StageCache(Path(cfg.stage_cache).expanduser() if cfg.stage_cache else None)
    cache.turns.check()  # locks in the cache that do not exclude: said, and this run computes alone
    log.info("pair: instruct=%s thinking=%s | %d training prompts, %d evaluation questions | device %s",
             pair.instruct, pair.thinking, len(train), len(evaluation), device)
    generator = Generator(model=cfg.model, generation=generation, device=device, token_budget=token_budget)
    record_config(cfg, paths)  # last: a start refused above is not a run a resume must match
    return Run(cfg=cfg, paths=paths, train=train, eval=evaluation, grader=get_grader(cfg.domain.grader),
               start=start, generator=generator, engine=Engine.of(cfg, device, generation), stage=StageRunner(cache))


def choose_device(name: str, cache_dir: Path, run_dir: str, gpus: Optional[Sequence[str]] = None):
    """The run's torch device, and the lock that makes it this run's (None: not locked).

    `cpu`, `cuda`, `cuda:N` pin (nothing locked: jobs pinned to one GPU share it). `auto`: the CPU where
    there is no GPU; else the first GPU no other thinkswitch process holds (a lock per GPU, by its UUID,
    under `<cache_dir>/devices/`, held until the run ends, released by the kernel if it dies), waiting
    while all are taken. The process then sees that GPU only (CUDA_VISIBLE_DEVICES, set before CUDA starts
    here: the HF Trainer would otherwise spread over every GPU it sees) and uses it as cuda:0.
    `gpus`: the visible GPUs' UUIDs in CUDA's order (default: `gpu_ids()`); a seam for tests.
    """
    import torch

    if name != "auto":
        return pick_device(name), None
    gpus = gpu_ids() if gpus is None else list(gpus)
    if not gpus:
        return torch.device("cpu"), None
    where = Path(cache_dir).expanduser() / "devices"
    try:
        index, lock = claim_one(gpus, where, run=run_dir)
    except OSError as e:
        log.warning("device=auto: cannot lock a GPU in %s (%s); using cuda:0, which other jobs may share",
                    where, e.strerror or e)
        return torch.device("cuda:0"), None
    log.info("device=auto: GPU %d of %d (%s) is this run's, the first free one (locks in %s)",
             index, len(gpus), gpus[index], where)
    if torch.cuda.is_initialized():  # too late to narrow what CUDA sees in this process
        return torch.device(f"cuda:{index}"), lock
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index]
    return torch.device("cuda:0"), lock


GPU_UUIDS = ("import torch\n"
             "for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):\n"
             "    print(torch.cuda.get_device_properties(i).uuid)")


def gpu_ids() -> list[str]:
    """The GPUs this process may use, in CUDA's order, by UUID (`GPU-<uuid>`: the same GPU whatever
    CUDA_VISIBLE_DEVICES calls it, on any host); [] without CUDA. Asked of a child process, so that CUDA
    does not start here before `choose_device` has set CUDA_VISIBLE_DEVICES."""
    import torch

    if torch.version.cuda is None:  # a CPU build of torch
        return []
    try:
        out = subprocess.run([sys.executable, "-c", GPU_UUIDS], capture_output=True, text=True, timeout=300,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("device=auto: could not list the GPUs (%s); each job may use any of them", e)
        return []
    return [u if u.startswith("GPU-") else f"GPU-{u}" for u in out.split()]


_COUNTED: dict[tuple, list[int]] = {}  # prompt token counts by (tokenizer, system prompt, prompts)


def generation_jobs(cfg: ExperimentConfig, tokenizer, train: list[dict],
                    evaluation: list[dict]) -> list[tuple[str, str, list[int], int]]:
    """The run's generations, each as (stage, role, its prompts' token counts once chat-formatted, samples).
    Each prompt set is tokenized once (both models answer the same evaluation questions), and once per process
    (`_COUNTED`: a multirun's jobs plan the same prompts)."""
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.hf import prompt_token_counts

    def counts(prompts: list[dict]) -> list[int]:
        key = (tokenizer.name_or_path, len(tokenizer), str(tokenizer.chat_template), cfg.domain.system_prompt,
               tuple(ex["prompt"] for ex in prompts))
        if key not in _COUNTED:
            if len(_COUNTED) >= 8:
                _COUNTED.clear()
            _COUNTED[key] = prompt_token_counts(
                tokenizer, [chat_prompt(tokenizer, ex["prompt"], cfg.domain.system_prompt) for ex in prompts])
        return list(_COUNTED[key])

    labels = cfg.method.distill and cfg.iterations and cfg.method.labels == "thinking"
    jobs = [("generate", "thinking", counts(train), cfg.generation.samples_per_prompt)] if labels else []
    eval_counts = counts(evaluation)
    return jobs + [(f"evaluate {role}", role, eval_counts, cfg.evaluate.samples) for role in ("thinking", "instruct")]


def plan_memory(cfg: ExperimentConfig, pair: ModelPair, train: list[dict], evaluation: list[dict],
                device, backend: str = "hf") -> Optional[int]:
    """The memory plan, from the checkpoint's config and the prompts' token counts, before any model loads:
    refuses a generation that cannot fit one sequence (ConfigError with the numbers), logs the batches the
    HF backend will use and an estimate of distillation's peak; returns the HF backend's KV token budget
    (None when the backend plans its own memory, or the checkpoint's config is not at hand). On vLLM: refuses a
    `generation.vllm.max_model_len` shorter than a prompt + its max_new_tokens (`vllm_backend.check_context`)."""
    from thinkswitch.engines import memory
    from thinkswitch.engines.distill_memory import plan_distill
    from thinkswitch.engines.free_memory import free_memory
    from thinkswitch.engines.models import load_tokenizer
    from thinkswitch.engines.shapes import load_config, resolve_dtype

    try:
        config = load_config(pair.thinking)
    except ValueError:
        log.info("memory plan: no config.json for %s before it downloads; not planned", pair.thinking)
        return None
    dtype = resolve_dtype(cfg.model.dtype, device.type)
    free = free_memory(str(device))
    if cfg.method.distill and cfg.iterations:
        plan = plan_distill(config, dtype=dtype, quantize_4bit=cfg.trainer.quantize_4bit, lora=cfg.trainer.lora,
                            sft=cfg.trainer.sft, bnb=cfg.trainer.bnb, free_bytes=free, device=str(device),
                            merge_device=cfg.distill.merge_device)
        log.info("%s", plan.describe())
        if plan.warning():
            log.warning("%s", plan.warning())
    if backend not in ("hf", "vllm"):  # as resolved (generation.backend=auto); cb plans its own cache
        return None
    tokenizer = load_tokenizer(pair.thinking, cfg.model)
    jobs = generation_jobs(cfg, tokenizer, train, evaluation)
    if backend == "vllm":  # vLLM plans its own memory; its context must hold every generation
        from thinkswitch.engines.vllm_backend import check_context

        errors = check_context(cfg.generation.vllm, config, [
            (what, f"model.sampling.{role}.max_new_tokens", max(counts, default=0),
             getattr(cfg.model.sampling, role).max_new_tokens) for what, role, counts, _ in jobs])
        if errors:
            raise ConfigError("; ".join(errors))
        return None
    plans = [memory.plan_generation_for(
        pair.thinking, dtype=dtype, device=str(device), config=config, free_bytes=free, prompt_tokens=counts,
        samples_per_prompt=samples, max_new_tokens=getattr(cfg.model.sampling, role).max_new_tokens,
        batch_size=cfg.generation.batch_size, key=f"model.sampling.{role}.max_new_tokens",
        quantization=cfg.generation.quantization)
        for _, role, counts, samples in jobs]
    log.info("%s", plans[0].describe())
    return plans[0].token_budget  # the same for every job: one architecture, one dtype, one device


@contextmanager
def frozen_library_heap(cfg: ExperimentConfig, keep: bool = False) -> Iterator[None]:
    """Import the libraries the stages use, collect once and `gc.freeze()` what is alive, for the run.

    The stages call `gc.collect()` to free a model before the next one loads. The imported libraries
    are ~0.5M long-lived objects; frozen, a collection skips them (0.27 s -> 0.01 s per call on the
    testbed), and so do Python's own periodic full collections during training. Unfrozen at the end,
    unless `keep` (the jobs of a multirun, one after another in one process): then the next job's collection
    walks only what this job left alive, not the libraries again (0.27 s a job on the testbed).
    """
    rounds = cfg.iterations > 0  # iterations=0 only evaluates the starting pair
    modules = ["torch", "transformers"] + (["peft", "trl"] if cfg.method.distill and rounds else [])  # not datasets
    for name in modules + (["mergekit.merge"] if cfg.method.merge and rounds else []):
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if not keep:
            gc.unfreeze()

