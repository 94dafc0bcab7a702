"""The ThinkSwitch loop, top to bottom.

Iteration 0 evaluates the starting pair. Each iteration k = 1..K then:
  1. generate  the thinking checkpoint answers the training prompts (raw outputs saved)
  2. strip     reasoning traces removed, answer-only pairs kept
  3. distill   the pairs into the instruct checkpoint (LoRA/QLoRA, adapter merged)
  4. merge     new thinking checkpoint = SLERP(thinking, new instruct, t)
  5. evaluate  both new checkpoints on the evaluation set
and records the iteration. A stage whose completion marker exists is skipped, so re-running in
the same run directory continues where a previous run stopped.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from omegaconf import OmegaConf

from thinkswitch import __version__
from thinkswitch.cache import StageCache, checkpoint_id, digest, file_digest
from thinkswitch.config import ExperimentConfig
from thinkswitch.data import load_domain
from thinkswitch.grading import get_grader
from thinkswitch.io import parse_size, read_jsonl, write_json, write_jsonl
from thinkswitch.models import pick_device, resolve_pair
from thinkswitch.paths import IterationPaths, RunPaths
from thinkswitch.rundir import check_disk, check_resume, check_writable, prune_checkpoints
from thinkswitch.tracking import Tracker
from thinkswitch.validate import check_config

log = logging.getLogger(__name__)


class Experiment:
    """Holds what every stage of a run shares: config, paths, device, data, tracker."""

    def __init__(self, cfg: ExperimentConfig):
        check_config(cfg)
        self.cfg = cfg
        self.run = RunPaths(Path(cfg.run_dir))
        self.where: tuple[Optional[str], str] = (None, "setup")  # the iteration and stage running
        check_writable(self.run)
        self.device = pick_device(cfg.device)
        self.grader = get_grader(cfg.domain.grader)
        self.train, self.eval = load_domain(cfg.domain, cfg.model)
        check_resume(cfg, self.run)
        self.pair = resolve_pair(cfg.model, Path(cfg.cache_dir).expanduser())
        check_disk(cfg, self.run, self.pair.instruct, self.pair.thinking)
        self.cache = StageCache(Path(cfg.stage_cache).expanduser() if cfg.stage_cache else None)
        # identity of every checkpoint the run touches (the stage cache's keys build on them)
        self.ids = {p: checkpoint_id(p, cfg.model.revision) for p in (self.pair.instruct, self.pair.thinking)}
        log.info("pair: instruct=%s thinking=%s | %d training prompts, %d evaluation questions | device %s",
                 self.pair.instruct, self.pair.thinking, len(self.train), len(self.eval), self.device)

    def _backend(self, path: str):
        from thinkswitch.generate import load_backend

        g = self.cfg.generation
        return load_backend(g.backend, path, self.cfg.model, self.device, g.batch_size, g)

    def seed(self, k: int, offset: int = 0) -> int:
        """Seed of a stage: label generation and training differ per iteration; evaluation uses
        the same seed at every iteration (common random numbers), so scores compare checkpoints."""
        return self.cfg.seed * 1000 + k * 10 + offset

    def _stage(self, it: IterationPaths, name: str, fn: Callable[[], dict], key: Optional[str] = None,
               outputs: tuple[str, ...] = ()) -> dict:
        """Run a stage once: skip it when its marker exists, reuse it from the stage cache when its
        key is there, else run it (and cache its `outputs`); the marker is written last."""
        self.where = (it.root.name, name)  # where a failure happened
        if it.is_done(name):
            log.info("[%s] %s: done in an earlier run, skipped", it.root.name, name)
            return it.done_info(name)["metrics"]
        log.info("[%s] %s", it.root.name, name)
        it.root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cached = self.cache.restore(key, list(outputs), it.root) if key else None
        if cached is not None:
            log.info("[%s] %s: reused from the stage cache (key %s)", it.root.name, name, key)
            metrics = {**cached, f"time/{name}": time.perf_counter() - t0, f"cache/{name}": 1}
        else:
            metrics = {**fn(), f"time/{name}": time.perf_counter() - t0}
            if os.environ.get("THINKSWITCH_FAULT_INJECT") == f"{it.root.name}/{name}":  # tests: die before marker
                os.kill(os.getpid(), signal.SIGKILL)
            if key:
                self.cache.store(key, list(outputs), it.root, metrics)
        it.mark_done(name, {"metrics": metrics})
        return metrics

    # -- stage cache keys: what determines each stage's outputs ---------------------------------
    def _common(self) -> tuple:
        cfg = self.cfg
        return (__version__, self.device.type, cfg.model.dtype, cfg.domain.system_prompt, cfg.generation.batch_size,
                cfg.generation.backend) + ((cfg.generation.vllm,) if cfg.generation.backend == "vllm" else ())

    def generate_key(self, k: int, thinking: str) -> str:
        return digest("generate", self.ids[thinking], self.train, self.cfg.model.sampling.thinking,
                      self.cfg.generation.samples_per_prompt, self.seed(k), *self._common())

    def distill_key(self, it: IterationPaths, k: int, instruct: str) -> str:
        return digest("distill", self.ids[instruct], file_digest(it.pairs), self.cfg.trainer, self.seed(k, 1),
                      *self._common())

    def evaluate_key(self, instruct: str, thinking: str) -> str:
        return digest("evaluate", self.ids[instruct], self.ids[thinking], self.eval, self.cfg.model.sampling,
                      self.cfg.evaluate.samples, self.cfg.domain.grader, self.seed(0, 2), *self._common())

    # -- stages ------------------------------------------------------------------------------
    def generate(self, it: IterationPaths, k: int, thinking: str) -> dict:
        from thinkswitch.generate import generate_labels

        return generate_labels(self._backend(thinking), self.train, self.cfg.model.sampling.thinking,
                               self.cfg.generation.samples_per_prompt, self.cfg.domain.system_prompt, self.seed(k),
                               it.generations)

    def strip(self, it: IterationPaths) -> dict:
        from thinkswitch.strip import DROP_KEYS, strip_generations

        metrics = strip_generations(it.generations, it.pairs, self.cfg.domain.grader, self.cfg.distill)
        if metrics["strip/pairs"] == 0:
            reasons = ", ".join(f"{k.split('/')[1]}: {metrics[k]}" for k in DROP_KEYS if metrics[k])
            raise RuntimeError(
                f"{it.root.name}: all {metrics['strip/generations']} generations were dropped ({reasons}); nothing "
                f"to distill. If traces were cut off, raise model.sampling.thinking.max_new_tokens. "
                f"Everything so far is kept in {self.run.root}")
        return metrics

    def distill(self, it: IterationPaths, k: int, instruct: str) -> dict:
        from thinkswitch.distill import distill

        return distill(instruct, it.pairs, self.cfg.trainer, self.cfg.model, self.device, self.seed(k, 1),
                       self.cfg.domain.system_prompt, it.adapter, it.instruct, parse_size(self.cfg.shard_size))

    def merge(self, it: IterationPaths, base: str, instruct: str) -> dict:
        from thinkswitch.merge import merge

        return merge(base, instruct, self.cfg.merge, it.thinking, parse_size(self.cfg.shard_size))

    def evaluate(self, it: IterationPaths, instruct: str, thinking: str) -> dict:
        from thinkswitch.evaluate import evaluate

        metrics: dict[str, Any] = {}
        for role, path in (("instruct", instruct), ("thinking", thinking)):
            sampling = getattr(self.cfg.model.sampling, role)
            metrics |= evaluate(self._backend(path), role, self.eval, self.grader, sampling,
                                self.cfg.domain.system_prompt, self.seed(0, 2), it.eval_results(role),
                                self.cfg.evaluate.samples)
        return metrics

    # -- the loop ----------------------------------------------------------------------------
    def evaluate_stage(self, it: IterationPaths, instruct: str, thinking: str) -> dict:
        outputs = (it.eval_results("instruct").name, it.eval_results("thinking").name)
        return self._stage(it, "evaluate", lambda: self.evaluate(it, instruct, thinking),
                           self.evaluate_key(instruct, thinking), outputs)

    def gold_pairs(self, it: IterationPaths) -> dict:
        """The oracle baseline: the dataset's own answers (canonical format) as training targets."""
        from thinkswitch.grading import canonical_answer

        missing = [ex["id"] for ex in self.train if ex.get("answer") is None]
        if missing:
            raise ValueError(f"method=gold_oracle needs answers for the training prompts; map `answer` in "
                             f"domain.train.fields (e.g. id {missing[0]} has none)")
        pairs = [{"id": ex["id"], "sample": 0, "prompt": ex["prompt"],
                  "completion": canonical_answer(self.cfg.domain.grader, ex["answer"])} for ex in self.train]
        write_jsonl(it.pairs, pairs)
        return {"strip/pairs": len(pairs), "strip/prompts": len(pairs), "strip/prompts_kept": len(pairs)}

    def iteration(self, k: int, instruct: str, thinking: str) -> tuple[dict, str, str]:
        """One round; returns its metrics and the new (instruct, thinking) checkpoints."""
        it, method = self.run.iteration(k), self.cfg.method
        metrics: dict[str, Any] = {}
        if method.distill:
            if method.labels == "gold":
                metrics |= self._stage(it, "strip", lambda: self.gold_pairs(it))
            else:
                metrics |= self._stage(it, "generate", lambda: self.generate(it, k, thinking),
                                       self.generate_key(k, thinking), ("generations.jsonl",))
                metrics |= self._stage(it, "strip", lambda: self.strip(it))
            key = self.distill_key(it, k, instruct)
            metrics |= self._stage(it, "distill", lambda: self.distill(it, k, instruct), key, ("adapter", "instruct"))
            instruct = str(it.instruct)
            self.ids[instruct] = key
        if method.merge:
            base = thinking if self.cfg.merge.base == "current" else self.pair.thinking  # SLERP's t=0 end
            metrics |= self._stage(it, "merge", lambda: self.merge(it, base, instruct))
            self.ids[str(it.thinking)] = digest("merge", self.cfg.merge, self.ids[base], self.ids[instruct])
            thinking = str(it.thinking)
        metrics |= self.evaluate_stage(it, instruct, thinking)
        return metrics, instruct, thinking

    def record(self, k: int, metrics: dict, tracker: Tracker, history: list[dict]) -> None:
        it = self.run.iteration(k)
        metrics = {**metrics, **stage_cost(metrics, self.cfg.cost.gpu_hour_usd)}
        row = {"iteration": k, **metrics}
        write_json(it.metrics, row)
        history.append(row)
        write_jsonl(self.run.metrics, history)
        tracker.log(k, metrics)
        prune_checkpoints(self.cfg, self.run, k)
        for role in ("instruct", "thinking"):
            tracker.add_samples(k, role, read_jsonl(it.eval_results(role)), self.cfg.evaluate.samples_table)
        log.info("[%s] instruct %d/%d, thinking %d/%d", it.root.name, metrics["instruct/correct"],
                 metrics["instruct/n"], metrics["thinking/correct"], metrics["thinking/n"])

    def __call__(self) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        tracker = Tracker(cfg.tracking, self.run.root, OmegaConf.to_container(cfg, resolve=True))
        summary, failed = None, True
        try:
            history: list[dict] = []
            instruct, thinking = self.pair.instruct, self.pair.thinking
            base = self.run.iteration(0)
            self.record(0, self.evaluate_stage(base, instruct, thinking), tracker, history)
            for k in range(1, cfg.iterations + 1):
                metrics, instruct, thinking = self.iteration(k, instruct, thinking)
                self.record(k, metrics, tracker, history)
            summary = summarize(history, time.perf_counter() - t0, tracker.mode, cfg.cost.gpu_hour_usd)
            write_json(self.run.summary, summary)
            self.run.failed.unlink(missing_ok=True)
            failed = False
            return summary
        except BaseException as e:
            self.run.record_failure(e, *self.where)
            log.error("run failed in %s %s: %s: %s (finished stages are kept; rerun with "
                      "hydra.run.dir=%s to resume)", *self.where, type(e).__name__, e, self.run.root)
            raise
        finally:
            tracker.finish(summary and run_summary(summary), failed)


def stage_cost(metrics: dict, gpu_hour_usd: Optional[float]) -> dict:
    """`cost/<stage>_usd` for every `time/<stage>` (seconds), at `gpu_hour_usd` per hour."""
    if gpu_hour_usd is None:
        return {}
    costs = {f"cost/{k[5:]}_usd": v / 3600 * gpu_hour_usd for k, v in metrics.items() if k.startswith("time/")}
    return {**costs, "cost/iteration_usd": sum(costs.values())}


def summarize(history: list[dict], seconds: float, tracking_mode: str, gpu_hour_usd: Optional[float]) -> dict:
    """summary.json: baseline, final and delta of every score, time and cost per stage, the history."""
    keys = [f"{r}/{m}" for r in ("instruct", "thinking")
            for m in ("correct", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "tokens_per_answer")]
    first, last = history[0], history[-1]
    stage_seconds: dict[str, float] = {}
    for row in history:
        for k, v in row.items():
            if k.startswith("time/"):
                stage_seconds[k[5:]] = stage_seconds.get(k[5:], 0.0) + v
    return {
        "iterations": last["iteration"],
        "baseline": {k: first[k] for k in keys},
        "final": {k: last[k] for k in keys},
        "delta": {k: last[k] - first[k] for k in keys
                  if k.split("/")[1] in ("correct", "accuracy", "tokens_per_answer")},
        "wall_seconds": seconds,
        "stage_seconds": stage_seconds,
        "cost_usd": None if gpu_hour_usd is None else {
            **{stage: sec / 3600 * gpu_hour_usd for stage, sec in stage_seconds.items()},
            "total": seconds / 3600 * gpu_hour_usd},
        "tracking": tracking_mode,
        "history": history,
    }


def run_summary(summary: dict) -> dict:
    """What W&B's run summary holds: final scores, their deltas from iteration 0, total cost."""
    out = {**summary["final"], **{f"delta/{k}": v for k, v in summary["delta"].items()}}
    if summary["cost_usd"]:
        out["cost/total_usd"] = summary["cost_usd"]["total"]
    return out


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


def run_experiment(cfg: ExperimentConfig) -> dict:
    """Run (or continue) the experiment `cfg` describes; returns the summary."""
    try:
        experiment = Experiment(cfg)
    except Exception as e:  # before the run starts: keep an earlier attempt's failed.json, if any
        RunPaths(Path(cfg.run_dir)).record_failure(e, None, "setup", overwrite=False)
        raise
    with frozen_library_heap(cfg):
        return experiment()
