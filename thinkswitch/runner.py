"""The stage runner: each stage of a run once, its outputs reused where they already exist.

A stage whose completion marker (`<stage>.done`, written last) exists is skipped; a stage whose
cache key is in the stage cache is restored from it; otherwise it runs, and its outputs are
stored in the cache. The runner times every stage and knows where a failure happened.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from thinkswitch.cache import StageCache
from thinkswitch.paths import IterationPaths

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
                 outputs: Sequence[Path] = ()) -> dict:
        """The stage's metrics: from its marker, from the stage cache (`key`: its `outputs` are restored),
        or from running `fn`; the marker is written last."""
        self.where = (it.root.name, stage)
        if it.is_done(stage):
            log.info("[%s] %s: done in an earlier run, skipped", it.root.name, stage)
            return it.done_info(stage)["metrics"]
        log.info("[%s] %s", it.root.name, stage)
        it.root.mkdir(parents=True, exist_ok=True)
        names = [Path(p).name for p in outputs]
        t0 = time.perf_counter()
        cached = self.cache.restore(key, names, it.root) if key else None
        if cached is not None:
            log.info("[%s] %s: reused from the stage cache (key %s)", it.root.name, stage, key)
            metrics = {**cached, f"time/{stage}": time.perf_counter() - t0, f"cache/{stage}": 1}
        else:
            metrics = {**fn(), f"time/{stage}": time.perf_counter() - t0}
            for hook in AFTER_OUTPUTS:
                hook(it, stage)
            if key:
                self.cache.store(key, names, it.root, metrics)
        it.mark_done(stage, {"metrics": metrics})
        return metrics
