"""The one place that knows where a run's artifacts live.

    <run_dir>/
      run_config.yaml        the resolved config the run started with (checked on resume)
      metrics.jsonl          one line per iteration (the local source of truth)
      summary.json           written at the end of the run
      failed.json            written instead when the run stopped on an error
      iter_00/               baseline: the starting pair, evaluated
        eval_instruct.jsonl  eval_thinking.jsonl  metrics.json  evaluate_instruct.done  evaluate_thinking.done
      iter_01/
        generations.jsonl    raw outputs of the thinking checkpoint on the training prompts
        pairs.jsonl          answer-only pairs (trace stripped)
        adapter/             the LoRA adapter SFTTrainer produced (+ train_log.jsonl)
        instruct/            distilled instruct checkpoint (adapter merged, full precision)
        thinking/            SLERP of thinking and new instruct (+ mergekit.yaml)
        eval_instruct.jsonl  eval_thinking.jsonl  metrics.json
        <stage>.done         completion markers (`Stage`: generate.done ... evaluate_thinking.done), written
                             last: metrics, the key of the inputs, the digests and ids of the outputs
      run.lock               while a process runs in the directory: its pid, host and start time
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from thinkswitch.config import Choice, Role
from thinkswitch.store.digests import without
from thinkswitch.store.io import read_json, write_json


class Stage(Choice):
    """The stages of an iteration, in the order they run; each is marked finished by `<stage>.done`. Evaluation
    is one stage per checkpoint (`evaluation(role)`), so each is keyed, cached and resumed on its own."""

    generate = "generate"
    strip = "strip"  # the gold_oracle baseline writes its pairs as this stage too
    distill = "distill"
    merge = "merge"
    evaluate_instruct = "evaluate_instruct"
    evaluate_thinking = "evaluate_thinking"

    @classmethod
    def evaluation(cls, role: Role) -> "Stage":
        """The stage that evaluates the checkpoint `role`."""
        return cls(f"evaluate_{role}")


TRAIN_LOG = "train_log.jsonl"  # the trainer's log history, saved beside the adapter
MERGEKIT_YAML = "mergekit.yaml"  # the resolved mergekit configuration, saved beside the merged weights
# Files that say how an output was made, not what it is (absolute paths, timings): outside its id
# (`runner.content_id`), so that the same weights made in another run directory have the same id.
DESCRIPTIVE = (TRAIN_LOG, MERGEKIT_YAML)


@dataclass(frozen=True)
class IterationPaths:
    root: Path

    @property
    def generations(self) -> Path:
        return self.root / "generations.jsonl"

    @property
    def pairs(self) -> Path:
        return self.root / "pairs.jsonl"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def instruct(self) -> Path:
        return self.root / "instruct"

    @property
    def thinking(self) -> Path:
        return self.root / "thinking"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    def eval_results(self, role: Role) -> Path:
        return self.root / f"eval_{role}.jsonl"

    def marker(self, stage: Stage) -> Path:
        return self.root / f"{stage}.done"

    def is_done(self, stage: Stage) -> bool:
        return self.marker(stage).exists()

    def evaluated(self) -> bool:
        """Whether both checkpoints of the iteration were evaluated: the iteration's last stages finished."""
        return all(self.is_done(Stage.evaluation(role)) for role in Role)

    def mark_done(self, stage: Stage, info: dict) -> None:
        write_json(self.marker(stage), info)

    def done_info(self, stage: Stage) -> dict:
        return read_json(self.marker(stage))

    def mark_pruned(self, stage: Stage, name: str) -> None:
        """Record in `stage`'s marker that its output `name` is removed on purpose (`keep_checkpoints`):
        a resume does not look for it. Called before the removal."""
        if not self.is_done(stage):
            return
        info = self.done_info(stage)
        info["pruned"] = sorted({*info.get("pruned", []), name})
        if info.get("digests"):
            info["digests"] = without(info["digests"], [name])
        write_json(self.marker(stage), info)


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def iteration(self, k: int) -> IterationPaths:
        return IterationPaths(self.root / f"iter_{k:02d}")

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def run_config(self) -> Path:
        """The resolved config the run started with: a resume must match it."""
        return self.root / "run_config.yaml"

    @property
    def lock(self) -> Path:
        """Held (fcntl) by the one process writing the run; names it."""
        return self.root / "run.lock"

    @property
    def failed(self) -> Path:
        """Written when a run stops on an error: the error, and the iteration and stage it hit."""
        return self.root / "failed.json"

    def record_failure(self, error: BaseException, iteration: Optional[str], stage: str,
                       overwrite: bool = True) -> None:
        """failed.json; never raises (an unwritable run directory is itself the error)."""
        if not overwrite and self.failed.exists():
            return
        try:
            write_json(self.failed, {"error": f"{type(error).__name__}: {error}", "iteration": iteration,
                                     "stage": stage})
        except OSError:
            pass
