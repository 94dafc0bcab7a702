"""The ThinkSwitch loop, top to bottom.

Iteration 0 evaluates the starting pair (with `iterations=0`, that is the whole run). Each iteration
k = 1..K then:
  1. generate  the thinking checkpoint answers the training prompts (raw outputs saved)
  2. strip     reasoning traces removed, answer-only pairs kept
  3. distill   the pairs into the instruct checkpoint (LoRA/QLoRA, adapter merged)
  4. merge     new thinking checkpoint = SLERP(thinking, new instruct, t)
  5. evaluate  both new checkpoints on the evaluation set (one stage each: evaluate_instruct, evaluate_thinking)
and records the iteration. Each step builds the frozen dataclass of its stage's inputs and runs it (`run_step`):
the inputs give the stage's keys, what it reads and what it writes (`stages.inputs`). Each stage runs once per
run directory (`Run.stage`): rerunning in the same directory continues where a previous run stopped (a stage
whose inputs changed since is redone, and the stages built on it), and a sweep's jobs share stages whose inputs
are the same (the stage cache).
"""

from __future__ import annotations

import gc
import importlib
import logging
import time
from contextlib import closing, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from thinkswitch.analysis.records import record, run_summary, summarize
from thinkswitch.analysis.tracking import Tracker
from thinkswitch.config import ExperimentConfig, Labels, MergeBase, Role, as_plain
from thinkswitch.setup import Pair, Run, prepare
from thinkswitch.stages import distill, evaluate, generate, merge, strip
from thinkswitch.stages.inputs import Artifact, field_keys, needs_of, outputs_of, stage_key
from thinkswitch.store.io import write_json
from thinkswitch.store.paths import IterationPaths, RunPaths, Stage
from thinkswitch.store.rundir import RunLock, check_resume
from thinkswitch.store.runner import output_id

log = logging.getLogger(__name__)
details = logging.getLogger("thinkswitch.details")  # tracebacks: the CLI sends it to the log file only


def run_experiment(cfg: ExperimentConfig, on_start: Callable[[], None] = lambda: None, *,
                   keep_heap_frozen: bool = False) -> dict:
    """Run (or continue) the experiment `cfg` describes; returns the summary.

    The run directory has one writer (its lock), and a start that resumes an earlier run writes nothing
    there until it is accepted: its config matches, every check passed. `on_start` is called once the
    directory is this run's to write (the CLI writes Hydra's files and the log then). `keep_heap_frozen`:
    see `frozen_library_heap` (the CLI sets it for the jobs of a multirun).
    """
    paths = RunPaths(Path(cfg.run_dir))
    with RunLock(paths) as lock:
        try:
            resuming = check_resume(cfg, paths)
        except BaseException:  # an error, or a stop (SIGTERM, Ctrl-C)
            lock.leave_as_found()
            raise
        if not resuming:
            on_start()  # a new directory: nothing in it to protect
        try:
            run = prepare(cfg)
        except BaseException as e:  # a new run says why it stopped; an earlier run's directory is left as it was
            if resuming:
                lock.leave_as_found()
            else:
                paths.record_failure(e, None, "setup", overwrite=False)
            raise
        if resuming:
            on_start()
        with closing(run), frozen_library_heap(cfg, keep=keep_heap_frozen):  # closing: the run's GPU is let go
            return run_loop(run)


def run_loop(run: Run) -> dict:
    """Iteration 0 (the baseline), then `iterations` rounds, each recorded as it ends; then the summary."""
    cfg, t0 = run.cfg, time.perf_counter()
    tracker = Tracker(cfg.tracking, run.paths.root, as_plain(cfg))
    summary = None
    try:
        history: list[dict] = []
        pair = run.start
        record(cfg, run.paths, 0, evaluate_step(run, run.paths.iteration(0), pair), tracker, history)
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
    """One round of ThinkSwitch on `pair`; returns the round's metrics (its stages') and the new pair."""
    cfg, it = run.cfg, run.paths.iteration(k)
    metrics: dict[str, Any] = {}
    if cfg.method.distill:
        generations, done = generate_step(run, it, pair.thinking, k)  # 1. the thinking checkpoint answers
        if cfg.method.labels == Labels.thinking:
            pairs, stripped = strip_step(run, it, generations)  # 2. reasoning traces removed
        else:  # the gold_oracle baseline: 2., keeping only the answers that match the dataset's
            pairs, stripped = gold_step(run, it, generations)
        metrics |= done | stripped
        instruct, done = distill_step(run, it, pair.instruct, pairs, k)  # 3. into the instruct checkpoint
        pair, metrics = replace(pair, instruct=instruct), metrics | done
    if cfg.method.merge:  # 4. SLERP from the thinking checkpoint (t=0) toward the instruct one (t=1)
        base = pair.thinking if cfg.merge.base == MergeBase.current else run.start.thinking
        thinking, done = merge_step(run, it, base, pair.instruct)
        pair, metrics = replace(pair, thinking=thinking), metrics | done
    return metrics | evaluate_step(run, it, pair), pair  # 5. both checkpoints on the evaluation set


def run_step(run: Run, it: IterationPaths, stage: Stage, fn: Callable[[Any], dict], inputs: Any, *,
             cached: bool = True) -> dict:
    """`fn(inputs)` as the stage `stage` of iteration `it`, once (`Run.stage`): keyed by its inputs
    (`stages.inputs.stage_key`), which also say what it reads and writes (`needs_of`, `outputs_of`). Returns its
    metrics. `cached=False`: not worth a stage-cache entry."""
    return run.stage(it, stage, lambda: fn(inputs), key=stage_key(inputs), inputs=stage_key(inputs, "marker"),
                     fields=field_keys(inputs), outputs=outputs_of(inputs), needs=needs_of(inputs), cached=cached)


def produced(it: IterationPaths, stage: Stage, path: Path) -> Artifact:
    """An output of a finished stage, as the next stage's input: named by the digest of its files."""
    return Artifact(str(path), output_id(it, stage, path))


def generate_step(run: Run, it: IterationPaths, thinking: Artifact, k: int) -> tuple[Artifact, dict]:
    cfg = run.cfg
    inputs = generate.GenerateInputs(
        checkpoint=thinking, examples=tuple(run.train), sampling=cfg.model.sampling.thinking,
        samples=cfg.generation.samples_per_prompt, system_prompt=cfg.domain.system_prompt, seed=label_seed(cfg, k),
        engine=run.engine, out=it.generations)
    metrics = run_step(run, it, Stage.generate, partial(generate.generate_labels, generator=run.generator), inputs)
    return produced(it, Stage.generate, inputs.out), metrics


def strip_step(run: Run, it: IterationPaths, generations: Artifact) -> tuple[Artifact, dict]:
    inputs = strip.StripInputs(generations=generations, grader=run.cfg.domain.grader, cfg=run.cfg.distill,
                               pairs=it.pairs)
    metrics = run_step(run, it, Stage.strip, strip.strip_generations, inputs, cached=False)  # seconds of work
    return produced(it, Stage.strip, inputs.pairs), metrics


def gold_step(run: Run, it: IterationPaths, generations: Artifact) -> tuple[Artifact, dict]:
    inputs = strip.GoldInputs(generations=generations, examples=tuple(run.train), grader=run.cfg.domain.grader,
                              cfg=run.cfg.distill, pairs=it.pairs)
    metrics = run_step(run, it, Stage.strip, strip.gold_pairs, inputs, cached=False)
    return produced(it, Stage.strip, inputs.pairs), metrics


def distill_step(run: Run, it: IterationPaths, instruct: Artifact, pairs: Artifact, k: int) -> tuple[Artifact, dict]:
    cfg = run.cfg
    inputs = distill.DistillInputs(
        instruct=instruct, pairs=pairs, trainer=cfg.trainer, model=cfg.model, seed=train_seed(cfg, k),
        system_prompt=cfg.domain.system_prompt, numerics=run.engine.numerics, shard_size=run.shard_size,
        merge_device=cfg.distill.merge_device, adapter_out=it.adapter, model_out=it.instruct)
    metrics = run_step(run, it, Stage.distill, partial(distill.distill, device=run.generator.device), inputs)
    return produced(it, Stage.distill, inputs.model_out), metrics


def merge_step(run: Run, it: IterationPaths, thinking: Artifact, instruct: Artifact) -> tuple[Artifact, dict]:
    inputs = merge.MergeInputs(thinking=thinking, instruct=instruct, cfg=run.cfg.merge, shard_size=run.shard_size,
                               out=it.thinking)
    metrics = run_step(run, it, Stage.merge, merge.merge, inputs, cached=False)  # rebuilt: not a checkpoint per job
    return produced(it, Stage.merge, inputs.out), metrics


def evaluate_step(run: Run, it: IterationPaths, pair: Pair) -> dict:
    """Both checkpoints on the evaluation set, one stage each (`evaluate_instruct`, `evaluate_thinking`), each keyed
    by its own inputs: a `merge.t` sweep's jobs share their distilled instruct checkpoint, so its evaluation is
    one stage-cache entry and only the merged thinking checkpoint is evaluated in each job. Returns `instruct/*`
    and `thinking/*` metrics; the two stages are timed together as `time/evaluate`."""
    cfg, metrics = run.cfg, {}
    for role in Role:
        inputs = evaluate.EvaluateInputs(
            checkpoint=getattr(pair, role), role=role, examples=tuple(run.eval), grader=cfg.domain.grader,
            sampling=getattr(cfg.model.sampling, role), samples=cfg.evaluate.samples,
            system_prompt=cfg.domain.system_prompt, seed=eval_seed(cfg), engine=run.engine, out=it.eval_results(role))
        metrics |= run_step(run, it, Stage.evaluation(role), partial(evaluate.evaluate, generator=run.generator),
                            inputs)
    metrics["time/evaluate"] = sum(metrics.pop(f"time/{Stage.evaluation(role)}") for role in Role)
    return metrics


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
