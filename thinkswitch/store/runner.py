"""The stage runner: each stage of a run once, its outputs reused where they already exist and verified.

A stage whose completion marker (`<stage>.done`, written last) exists is skipped once (1) the key of
its inputs the marker records is the key of its inputs now, and (2) its outputs are checked against
the digests the marker records (`thinkswitch.store.digests`). An input that changed since, or outputs
that changed since, are never used: the stage is redone, with a warning. The marker also records each
output's id (the digest of its files, `output_id`): the next stage's inputs name it, so a stage redone
with other bytes changes the inputs of the stages after it, which are then redone too. A stage whose
cache key is in the stage cache is restored from it (verified the same way); otherwise it runs, its
outputs are digested and stored in the cache (while another job computes the same key, this one waits
for it and restores it: `StageCache.claim`). The runner times every stage and knows where a failure
happened.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from thinkswitch.errors import StageError
from thinkswitch.store.cache import StageCache, digest
from thinkswitch.store.digests import check, digest_outputs, total_bytes
from thinkswitch.store.paths import DESCRIPTIVE, IterationPaths

log = logging.getLogger(__name__)

# Called with (iteration paths, stage name) after a stage wrote its outputs, before its marker: a hook
# for tests (fault injection: a process killed at the worst moment). Empty in real runs.
AFTER_OUTPUTS: list[Callable[[IterationPaths, str], None]] = []


class StageRunner:
    """Runs the stages of one run directory; `where` is the (iteration, stage) running or last run."""

    def __init__(self, cache: StageCache):
        self.cache = cache
        self.where: tuple[Optional[str], str] = (None, "setup")

    def __call__(self, it: IterationPaths, stage: str, fn: Callable[[], dict], *, key: Optional[str] = None,
                 inputs: Optional[str] = None, outputs: Sequence[Path] = (), needs: Sequence[str | Path] = (),
                 cached: bool = True, fields: Optional[dict] = None) -> dict:
        """The stage's metrics: from its marker (same `inputs` key, outputs verified), from the stage cache
        (`key`, unless not `cached`: its `outputs` are restored), or from running `fn` (which reads `needs`: the
        run's own files among them must exist); the marker, with the inputs' key and the outputs' digests and
        ids, is written last (and `fields`, each input's part of the key: to say which one changed)."""
        self.where = (it.root.name, stage)
        names = [Path(p).name for p in outputs]
        problem = None
        if it.is_done(stage):
            problem = changed_inputs(it, stage, inputs, fields) or self.verify(it, stage, names)
            if problem is None:
                return it.done_info(stage)["metrics"]
            log.warning("[%s] %s: %s; the stage is redone", it.root.name, stage, problem)
            it.marker(stage).unlink()
        log.info("[%s] %s", it.root.name, stage)
        it.root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        shared = key if cached else None  # a stage worth a cache entry: claimed, or waited for while another job has it
        with self.cache.claim(shared, names, it.root, f"[{it.root.name}] {stage}") as entry:
            if entry is not None:
                log.info("[%s] %s: reused from the stage cache (key %s)", it.root.name, stage, key)
                metrics = {**entry.metrics, f"time/{stage}": time.perf_counter() - t0, f"cache/{stage}": 1}
                digests = entry.digests
            else:
                self._check_inputs(it, stage, needs, problem)
                metrics = fn()
                for hook in AFTER_OUTPUTS:
                    hook(it, stage)
                t1 = time.perf_counter()
                digests = digest_outputs(it.root, names)
                log.info("[%s] %s: %d output files digested (%.0f MB, %.2f s)", it.root.name, stage,
                         len(digests["files"]), total_bytes(digests) / 1e6, time.perf_counter() - t1)
                metrics = {**metrics, f"time/{stage}": time.perf_counter() - t0}
                if shared:
                    self.cache.store(shared, names, it.root, metrics, digests)
        it.mark_done(stage, {"metrics": metrics, "outputs": names, "digests": digests, "inputs": inputs,
                             "ids": {name: content_id(digests, name) for name in names}, "input_fields": fields})
        return metrics

    def verify(self, it: IterationPaths, stage: str, names: list[str]) -> Optional[str]:
        """None when a finished stage's outputs are exactly what its marker records; else what is wrong."""
        try:
            info = it.done_info(stage)
            info["metrics"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"{it.marker(stage).relative_to(it.root.parent)}: unreadable ({e})"
        record = info.get("digests")
        if record is None:
            log.info("[%s] %s: marker written by an older version (no digests): outputs not verified",
                     it.root.name, stage)
            return None
        live = [n for n in names if n not in info.get("pruned", [])]
        t0 = time.perf_counter()
        try:
            problem = check(it.root, record, live)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            return f"{it.marker(stage).relative_to(it.root.parent)}: malformed digests ({e!r})"
        if problem is None:
            log.info("[%s] %s: done in an earlier run, skipped (%d files verified, %.0f MB, %.2f s)",
                     it.root.name, stage, len(record["files"]), total_bytes(record) / 1e6, time.perf_counter() - t0)
        return problem

    @staticmethod
    def _check_inputs(it: IterationPaths, stage: str, needs: Sequence[str | Path], problem: Optional[str]) -> None:
        """The run's own files the stage reads (checkpoints, pairs) must exist; a clear error when they are gone."""
        run_root = it.root.parent.resolve()
        for need in needs:
            path = Path(need).resolve()
            if _in_an_iteration(path, run_root) and not path.exists():
                what = f"{problem}, and the stage cannot be redone" if problem else "cannot run"
                raise StageError(f"[{it.root.name}] {stage}: {what}: its input {os.path.relpath(path, run_root)} "
                                 f"is gone (removed by keep_checkpoints, or deleted); restore it, or start a "
                                 f"new run directory ({run_root})")


def changed_inputs(it: IterationPaths, stage: str, inputs: Optional[str], fields: Optional[dict] = None) \
        -> Optional[str]:
    """Why a finished stage's inputs are not those it was computed from, naming those that changed where the
    marker records each one's key (`fields`), or None (they are, or the marker was written by a version that did
    not record them)."""
    try:
        info = it.done_info(stage)
        recorded, was = info.get("inputs"), info.get("input_fields") or {}
    except (OSError, ValueError, AttributeError):
        return None  # `verify` says what is wrong with the marker
    if inputs is None or recorded is None or recorded == inputs:
        return None
    changed = sorted(k for k in set(was) | set(fields or {}) if was.get(k) != (fields or {}).get(k))
    which = f"its input{'s' if len(changed) > 1 else ''} {', '.join(changed)} changed" if was and fields and changed \
        else "its inputs changed"
    return f"{which} since it ran (an earlier stage was redone, or an input was replaced)"


def output_id(it: IterationPaths, stage: str, output: Path) -> str:
    """The id of a finished stage's output (`content_id`, as its marker records it): what the next stage's
    inputs name it by."""
    info, name = it.done_info(stage), Path(output).name
    if name in info.get("ids", {}):
        return info["ids"][name]
    if info.get("digests"):  # a marker of an older version: computed from its digests
        return content_id(info["digests"], name)
    return digest("unrecorded", it.root.name, stage, name, info.get("metrics"))


def content_id(record: dict, name: str) -> str:
    """An output's id: the digest of its files (sizes and hashes from a digests record), leaving out the files
    that say how it was made rather than what it is (`paths.DESCRIPTIVE`: absolute paths, timings)."""
    files = {rel: v for rel, v in record["files"].items()
             if (rel == name or rel.startswith(name + "/")) and Path(rel).name not in DESCRIPTIVE}
    return digest("output", record.get("algorithm"), name, files)


def _in_an_iteration(path: Path, run_root: Path) -> bool:
    """Whether `path` is a file of one of the run's iterations (a hub id or a starting checkpoint is not)."""
    parts = path.relative_to(run_root).parts if path.is_relative_to(run_root) else ()
    return bool(parts) and parts[0].startswith("iter_")
