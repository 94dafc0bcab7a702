"""The ThinkSwitch loop, top to bottom.

Iteration 0 evaluates the starting pair. Each iteration k = 1..K then:
  1. generate  the thinking checkpoint answers the training prompts (raw outputs saved)
  2. strip     reasoning traces removed, answer-only pairs kept
  3. distill   the pairs into the instruct checkpoint (LoRA/QLoRA, adapter merged)
  4. merge     new thinking checkpoint = SLERP(thinking, new instruct, t)
  5. evaluate  both new checkpoints on the evaluation set
and records the iteration. Each stage runs once per run directory (`Run.stage`): rerunning in the
same directory continues where a previous run stopped, and a sweep's jobs share stages whose
inputs are the same (the stage cache).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from thinkswitch import __version__
from thinkswitch.analysis.records import record, run_summary, summarize
from thinkswitch.analysis.tracking import Tracker
from thinkswitch.config import ROLES, ExperimentConfig
from thinkswitch.setup import Checkpoint, Pair, Run, frozen_library_heap, prepare
from thinkswitch.stages import distill, evaluate, generate, merge, strip
from thinkswitch.store.io import parse_size, write_json
from thinkswitch.store.partial import remove_partial
from thinkswitch.store.paths import IterationPaths, RunPaths
from thinkswitch.store.rundir import RunLock, check_resume

log = logging.getLogger(__name__)
details = logging.getLogger("thinkswitch.details")  # tracebacks: the CLI sends it to the log file only


def run_experiment(cfg: ExperimentConfig, on_start: Callable[[], None] = lambda: None) -> dict:
    """Run (or continue) the experiment `cfg` describes; returns the summary.

    The run directory has one writer (its lock), and a start that resumes an earlier run writes nothing
    there until it is accepted: its config matches, every check passed. `on_start` is called once the
    directory is this run's to write (the CLI writes Hydra's files and the log then).
    """
    paths = RunPaths(Path(cfg.run_dir))
    with RunLock(paths):
        resuming = check_resume(cfg, paths)
        if not resuming:
            on_start()  # a new directory: nothing in it to protect
        try:
            run = prepare(cfg)
        except Exception as e:  # a new run says why it stopped; an earlier run's directory is left as it was
            if not resuming:
                paths.record_failure(e, None, "setup", overwrite=False)
            raise
        if resuming:
            on_start()
        with frozen_library_heap(cfg):
            return run_loop(run)


def run_loop(run: Run) -> dict:
    """Iteration 0 (the baseline), then `iterations` rounds, each recorded as it ends; then the summary."""
    cfg, t0 = run.cfg, time.perf_counter()
    tracker = Tracker(cfg.tracking, run.paths.root, dataclasses.asdict(cfg))
    summary = None
    try:
        history: list[dict] = []
        pair = run.start
        record(cfg, run.paths, 0, evaluate_pair(run, run.paths.iteration(0), pair), tracker, history)
        for k in range(1, cfg.iterations + 1):
            metrics, pair = iteration(run, k, pair)
            record(cfg, run.paths, k, metrics, tracker, history)
        summary = summarize(run.paths, history, time.perf_counter() - t0, tracker.mode, cfg.cost.gpu_hour_usd)
        write_json(run.paths.summary, summary)
        run.paths.failed.unlink(missing_ok=True)
        return summary
    except BaseException as e:
        run.paths.record_failure(e, *run.stage.where)
        details.error("run failed in %s %s", *run.stage.where, exc_info=True)
        raise
    finally:
        tracker.finish(summary and run_summary(summary), failed=summary is None)


def iteration(run: Run, k: int, pair: Pair) -> tuple[dict, Pair]:
    """One round of ThinkSwitch on `pair`; returns the round's metrics and the new pair."""
    cfg, it, stage = run.cfg, run.paths.iteration(k), run.stage
    metrics: dict[str, Any] = {}
    if cfg.method.distill:
        if cfg.method.labels == "thinking":
            # 1. generate: the thinking checkpoint answers the training prompts
            metrics |= stage(it, "generate", lambda: generate.generate_labels(
                generator=run.generator, checkpoint=pair.thinking.path, examples=run.train,
                sampling=cfg.model.sampling.thinking, samples=cfg.generation.samples_per_prompt,
                system_prompt=cfg.domain.system_prompt, seed=label_seed(cfg, k), out=it.generations),
                key=generate.cache_key(thinking_id=pair.thinking.id, examples=run.train,
                                       sampling=cfg.model.sampling.thinking, samples=cfg.generation.samples_per_prompt,
                                       seed=label_seed(cfg, k), context=stage_context(run)),
                outputs=[it.generations], needs=[pair.thinking.path])
            # 2. strip: reasoning traces removed, answer-only pairs kept
            metrics |= stage(it, "strip", lambda: strip.strip_generations(
                generations=it.generations, pairs=it.pairs, grader_name=cfg.domain.grader, cfg=cfg.distill),
                outputs=[it.pairs], needs=[it.generations])
        else:  # the gold_oracle baseline: the dataset's own answers are the labels
            metrics |= stage(it, "strip", lambda: strip.gold_pairs(
                examples=run.train, grader_name=cfg.domain.grader, pairs=it.pairs), outputs=[it.pairs])
        # 3. distill: the pairs into the instruct checkpoint
        key = distill.cache_key(instruct_id=pair.instruct.id, pairs=it.pairs, trainer=cfg.trainer,
                                seed=train_seed(cfg, k), context=stage_context(run))
        metrics |= stage(it, "distill", lambda: distill.distill(
            instruct=pair.instruct.path, pairs=it.pairs, trainer=cfg.trainer, model=cfg.model,
            device=run.generator.device, seed=train_seed(cfg, k), system_prompt=cfg.domain.system_prompt,
            adapter_out=it.adapter, model_out=it.instruct, shard_size=parse_size(cfg.shard_size)),
            key=key, outputs=[it.adapter, it.instruct], needs=[pair.instruct.path, it.pairs])
        pair = replace(pair, instruct=Checkpoint(str(it.instruct), key))
    if cfg.method.merge:
        # 4. merge: SLERP from the thinking checkpoint (t=0) toward the instruct one (t=1)
        merge_base = pair.thinking if cfg.merge.base == "current" else run.start.thinking
        metrics |= stage(it, "merge", lambda: merge.merge(
            thinking=merge_base.path, instruct=pair.instruct.path, cfg=cfg.merge, out=it.thinking,
            shard_size=parse_size(cfg.shard_size)), outputs=[it.thinking], needs=[merge_base.path, pair.instruct.path])
        pair = replace(pair, thinking=Checkpoint(str(it.thinking),
                                                 merge.merged_id(cfg.merge, merge_base.id, pair.instruct.id)))
    # 5. evaluate both checkpoints
    metrics |= evaluate_pair(run, it, pair)
    return metrics, pair


def evaluate_pair(run: Run, it: IterationPaths, pair: Pair) -> dict:
    """Both checkpoints on the evaluation set, as one stage: `instruct/*` and `thinking/*` metrics."""
    cfg = run.cfg

    def both() -> dict:
        metrics = {key: value for role in ROLES for key, value in evaluate.evaluate(
            generator=run.generator, checkpoint=getattr(pair, role).path, role=role, examples=run.eval,
            grader=run.grader, sampling=getattr(cfg.model.sampling, role), samples=cfg.evaluate.samples,
            system_prompt=cfg.domain.system_prompt, seed=eval_seed(cfg), out=it.eval_results(role),
            keep_partial=True).items()}  # a crash in the second evaluation keeps the first one's answers
        for role in ROLES:
            remove_partial(it.eval_results(role))
        return metrics

    key = evaluate.cache_key(checkpoint_ids={role: getattr(pair, role).id for role in ROLES}, examples=run.eval,
                             sampling=cfg.model.sampling, samples=cfg.evaluate.samples,
                             grader_name=cfg.domain.grader, seed=eval_seed(cfg), context=stage_context(run))
    return run.stage(it, "evaluate", both, key=key, outputs=[it.eval_results(role) for role in ROLES],
                     needs=[getattr(pair, role).path for role in ROLES])


# -- seeds: each stage draws its own random numbers ---------------------------------------------
def label_seed(cfg: ExperimentConfig, k: int) -> int:
    """Iteration k's label generation: new samples every iteration."""
    return cfg.seed * 1000 + k * 10


def train_seed(cfg: ExperimentConfig, k: int) -> int:
    """Iteration k's distillation (data order, LoRA init, dropout)."""
    return cfg.seed * 1000 + k * 10 + 1


def eval_seed(cfg: ExperimentConfig) -> int:
    """Evaluation: the same at every iteration (common random numbers), so a change of score is the
    checkpoints', not the sampler's."""
    return cfg.seed * 1000 + 2


def stage_context(run: Run) -> tuple:
    """What every stage-cache key includes besides the stage's own inputs: the package version and the
    settings that change numerics (device, dtype, generation backend as resolved (`generation.backend=auto`),
    batching and quantization) or prompts (system)."""
    cfg, backend, quantization = run.cfg, run.generator.generation.backend, run.generator.generation.quantization
    return (__version__, run.generator.device.type, cfg.model.dtype, cfg.domain.system_prompt,
            cfg.generation.batch_size, backend) + ((cfg.generation.vllm,) if backend == "vllm" else ()) + (
        (f"quantization={quantization}",) if quantization != "none" else ())
