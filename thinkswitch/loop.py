"""The ThinkSwitch loop, top to bottom.

Iteration 0 evaluates the starting pair (with `iterations=0`, that is the whole run). Each iteration
k = 1..K then:
  1. generate  the thinking checkpoint answers the training prompts (raw outputs saved)
  2. strip     reasoning traces removed, answer-only pairs kept
  3. distill   the pairs into the instruct checkpoint (LoRA/QLoRA, adapter merged)
  4. merge     new thinking checkpoint = SLERP(thinking, new instruct, t)
  5. evaluate  both new checkpoints on the evaluation set
and records the iteration. Each stage takes one frozen dataclass of its inputs, from which its keys
derive (`stages.inputs`). Each stage runs once per run directory (`Run.stage`): rerunning in the
same directory continues where a previous run stopped (a stage whose inputs changed since is redone,
and the stages built on it), and a sweep's jobs share stages whose inputs are the same (the stage cache).
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

from thinkswitch.analysis.records import record, run_summary, summarize
from thinkswitch.analysis.tracking import Tracker
from thinkswitch.config import ROLES, ExperimentConfig, as_plain
from thinkswitch.setup import Pair, Run, frozen_library_heap, prepare
from thinkswitch.stages import distill, evaluate, generate, merge, strip
from thinkswitch.stages.inputs import Artifact, stage_key
from thinkswitch.store.digests import digest_outputs
from thinkswitch.store.io import parse_size, write_json
from thinkswitch.store.paths import IterationPaths, RunPaths
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
    see `setup.frozen_library_heap` (the CLI sets it for the jobs of a multirun).
    """
    paths = RunPaths(Path(cfg.run_dir))
    with RunLock(paths) as lock:
        try:
            resuming = check_resume(cfg, paths)
        except Exception:
            lock.leave_as_found()
            raise
        if not resuming:
            on_start()  # a new directory: nothing in it to protect
        try:
            run = prepare(cfg)
        except Exception as e:  # a new run says why it stopped; an earlier run's directory is left as it was
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
    cfg, it = run.cfg, run.paths.iteration(k)
    metrics: dict[str, Any] = {}
    if cfg.method.distill:
        generations = generate_step(run, it, pair.thinking, k, metrics)  # 1. the thinking checkpoint answers
        if cfg.method.labels == "thinking":
            pairs = strip_step(run, it, generations, metrics)  # 2. reasoning traces removed
        else:  # the gold_oracle baseline: 2., keeping only the answers that match the dataset's
            pairs = gold_step(run, it, generations, metrics)
        pair = replace(pair, instruct=distill_step(run, it, pair.instruct, pairs, k, metrics))  # 3. into instruct
    if cfg.method.merge:  # 4. SLERP from the thinking checkpoint (t=0) toward the instruct one (t=1)
        base = pair.thinking if cfg.merge.base == "current" else run.start.thinking
        pair = replace(pair, thinking=merge_step(run, it, base, pair.instruct, metrics))
    metrics |= evaluate_pair(run, it, pair)  # 5. both checkpoints on the evaluation set
    return metrics, pair


def run_stage(run: Run, it: IterationPaths, name: str, fn: Callable[[Any], dict], inputs: Any, metrics: dict, *,
              outputs: list[Path], needs: list, cached: bool = True) -> None:
    """`fn(inputs)` as the stage `name` of iteration `it`, once (`Run.stage`), keyed by its inputs
    (`stages.inputs.stage_key`); its metrics are added to `metrics`."""
    metrics |= run.stage(it, name, lambda: fn(inputs), key=stage_key(inputs), inputs=stage_key(inputs, "marker"),
                         outputs=outputs, needs=needs, cached=cached)


def produced(run: Run, it: IterationPaths, stage: str, path: Path) -> Artifact:
    """An output of a finished stage, as the next stage's input: named by the digest of its files."""
    return Artifact(str(path), output_id(it, stage, path))


def generate_step(run: Run, it: IterationPaths, thinking: Artifact, k: int, metrics: dict) -> Artifact:
    cfg = run.cfg
    inputs = generate.GenerateInputs(
        checkpoint=thinking, examples=tuple(run.train), sampling=cfg.model.sampling.thinking,
        samples=cfg.generation.samples_per_prompt, system_prompt=cfg.domain.system_prompt, seed=label_seed(cfg, k),
        engine=run.engine, out=it.generations)
    run_stage(run, it, "generate", partial(generate.generate_labels, generator=run.generator), inputs, metrics,
              outputs=[it.generations], needs=[thinking.path])
    return produced(run, it, "generate", it.generations)


def strip_step(run: Run, it: IterationPaths, generations: Artifact, metrics: dict) -> Artifact:
    inputs = strip.StripInputs(generations=generations, grader=run.cfg.domain.grader, cfg=run.cfg.distill,
                               pairs=it.pairs)
    run_stage(run, it, "strip", strip.strip_generations, inputs, metrics, outputs=[it.pairs],
              needs=[generations.path], cached=False)  # seconds of work: not worth a cache entry
    return produced(run, it, "strip", it.pairs)


def gold_step(run: Run, it: IterationPaths, generations: Artifact, metrics: dict) -> Artifact:
    inputs = strip.GoldInputs(generations=generations, examples=tuple(run.train), grader=run.cfg.domain.grader,
                              cfg=run.cfg.distill, pairs=it.pairs)
    run_stage(run, it, "strip", strip.gold_pairs, inputs, metrics, outputs=[it.pairs], needs=[generations.path],
              cached=False)
    return produced(run, it, "strip", it.pairs)


def distill_step(run: Run, it: IterationPaths, instruct: Artifact, pairs: Artifact, k: int, metrics: dict) -> Artifact:
    cfg = run.cfg
    inputs = distill.DistillInputs(
        instruct=instruct, pairs=pairs, trainer=cfg.trainer, model=cfg.model, seed=train_seed(cfg, k),
        system_prompt=cfg.domain.system_prompt, numerics=run.engine.numerics, shard_size=parse_size(cfg.shard_size),
        merge_device=cfg.distill.merge_device, adapter_out=it.adapter, model_out=it.instruct)
    run_stage(run, it, "distill", partial(distill.distill, device=run.generator.device), inputs, metrics,
              outputs=[it.adapter, it.instruct], needs=[instruct.path, pairs.path])
    return produced(run, it, "distill", it.instruct)


def merge_step(run: Run, it: IterationPaths, thinking: Artifact, instruct: Artifact, metrics: dict) -> Artifact:
    inputs = merge.MergeInputs(thinking=thinking, instruct=instruct, cfg=run.cfg.merge,
                               shard_size=parse_size(run.cfg.shard_size), out=it.thinking)
    run_stage(run, it, "merge", merge.merge, inputs, metrics, outputs=[it.thinking],
              needs=[thinking.path, instruct.path], cached=False)  # rebuilt, not stored: a checkpoint per job
    return produced(run, it, "merge", it.thinking)


def evaluate_pair(run: Run, it: IterationPaths, pair: Pair) -> dict:
    """Both checkpoints on the evaluation set, as one stage: `instruct/*` and `thinking/*` metrics."""
    cfg, metrics = run.cfg, {}

    def one(role: str) -> evaluate.EvaluateInputs:
        return evaluate.EvaluateInputs(
            checkpoint=getattr(pair, role), role=role, examples=tuple(run.eval), grader=cfg.domain.grader,
            sampling=getattr(cfg.model.sampling, role), samples=cfg.evaluate.samples,
            system_prompt=cfg.domain.system_prompt, seed=eval_seed(cfg), engine=run.engine, out=it.eval_results(role))

    inputs = evaluate.PairInputs(**{role: one(role) for role in ROLES})
    stage = partial(evaluate.evaluate_pair, generator=run.generator, each=partial(evaluate_one, run, it))
    run_stage(run, it, "evaluate", stage, inputs, metrics,
              outputs=[it.eval_results(role) for role in ROLES], needs=[getattr(pair, role).path for role in ROLES])
    return metrics


def evaluate_one(run: Run, it: IterationPaths, inputs: evaluate.EvaluateInputs) -> dict:
    """One checkpoint's evaluation, itself reused from the stage cache when that checkpoint was evaluated
    the same way before: a `merge.t` sweep's jobs share their distilled instruct checkpoint, so only the
    merged thinking one is evaluated in each job. Its answers are kept in a partial file until the stage ends
    (a crash in the second evaluation keeps the first one's)."""
    key, out = stage_key(inputs), inputs.out
    cached = run.stage.cache.restore(key, [out.name], it.root)
    if cached is not None:
        log.info("[%s] evaluate %s: reused from the stage cache (key %s)", it.root.name, inputs.role, key)
        return {**cached.metrics, f"cache/evaluate_{inputs.role}": 1}
    metrics = evaluate.evaluate(inputs, generator=run.generator, keep_partial=True)
    run.stage.cache.store(key, [out.name], it.root, metrics, digest_outputs(it.root, [out.name]))
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
