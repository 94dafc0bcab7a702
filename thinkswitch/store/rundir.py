"""Guards on a run directory: one writer at a time (a lock), writable, has room, only resumed with its own
config and only extended when what the next iteration needs is there; and pruning of old checkpoints
(`keep_checkpoints`)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import yaml

from thinkswitch.config import ExperimentConfig, KeepCheckpoints, as_plain
from thinkswitch.errors import ConfigError, RunInUse
from thinkswitch.store.io import write_text
from thinkswitch.store.locks import HolderLock, describe
from thinkswitch.store.paths import RunPaths, Stage

log = logging.getLogger(__name__)

# Keys that may change when a run is resumed: where and how it runs, not what it computes.
RESUMABLE_KEYS = ("iterations", "tracking", "num_threads", "device", "run_dir", "cache_dir", "data_dir",
                  "keep_checkpoints", "shard_size", "stage_cache", "evaluate.samples_table",
                  "trainer.checkpoint_minutes")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: node}


def _comparable(config: dict) -> dict[str, Any]:
    flat = _flatten(config)
    return {k: v for k, v in flat.items() if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)}


def check_resume(cfg: ExperimentConfig, run: RunPaths) -> bool:
    """Whether this start resumes an earlier one (its `run_config.yaml` exists); refuse it when its config
    differs in a key that changes results, or when it extends a run whose last checkpoints are gone.
    Reads only: a refused resume leaves the run directory as it was.
    """
    if not run.run_config.exists():
        return False
    started = yaml.safe_load(run.run_config.read_text())
    before, now = _comparable(started), _comparable(as_plain(cfg))
    diffs = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
             if before.get(k) != now.get(k)]
    if diffs:
        raise ConfigError(f"{run.root} was started with another config; resuming it would mix results. "
                          f"Differing keys: {'; '.join(diffs)}. Use a new run directory, or the original "
                          f"settings (kept in {run.run_config}).")
    check_extension(cfg, run)
    log.info("resuming %s: finished stages are skipped (their outputs verified)", run.root)
    return True


def check_extension(cfg: ExperimentConfig, run: RunPaths) -> None:
    """The first unfinished iteration k starts from iteration k-1's checkpoints: refuse up front when
    they are gone (`keep_checkpoints=none` removes them when a run ends), naming them and what to do."""
    k = next((k for k in range(1, cfg.iterations + 1) if not run.iteration(k).evaluated()), None)
    if k is None or k == 1:
        return
    prev = run.iteration(k - 1)
    needed = [(prev.instruct, Stage.distill)] * cfg.method.distill + [(prev.thinking, Stage.merge)] * cfg.method.merge
    gone = [(path, stage) for path, stage in needed if not path.exists()]
    if gone:
        pruned = any(path.name in prev.done_info(stage).get("pruned", []) for path, stage in gone
                     if prev.is_done(stage))
        why = "keep_checkpoints removed them when the run ended" if pruned else "they were deleted"
        raise ConfigError(f"iterations={cfg.iterations}: iteration {k} starts from {prev.root.name}'s checkpoints, "
                          f"but {why} ({', '.join(str(p) for p, _ in gone)}), so {run.root} cannot be "
                          f"extended. Start a new run directory with iterations={cfg.iterations} "
                          f"(keep_checkpoints=last keeps what a later extension needs).")


def record_config(cfg: ExperimentConfig, run: RunPaths) -> None:
    """The run's config, written once, when a new run has passed every check (a resume must match it)."""
    if not run.run_config.exists():
        write_text(run.run_config, yaml.safe_dump(as_plain(cfg), sort_keys=False))


def check_writable(run: RunPaths) -> None:
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        probe = run.root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"run_dir: cannot write to {run.root} ({e.strerror})") from None


def checkpoint_bytes(path: str) -> int:
    """Size of a local checkpoint's weights (0 for a hub id: unknown before it downloads)."""
    p = Path(path).expanduser()
    return sum(f.stat().st_size for f in p.glob("*.safetensors")) if p.is_dir() else 0


def check_disk(cfg: ExperimentConfig, run: RunPaths, instruct: str, thinking: str) -> None:
    """Refuse to start when the checkpoints this run will keep cannot fit on the run's disk."""
    size = max(checkpoint_bytes(instruct), checkpoint_bytes(thinking))
    if not size:
        return
    kept_pairs = cfg.iterations if cfg.keep_checkpoints == KeepCheckpoints.all else 1  # last, none
    needed = size * 2 * (kept_pairs + 1)  # + 1: the next pair is written before the last is pruned
    free = shutil.disk_usage(run.root).free
    if needed > free:
        raise ConfigError(f"run_dir: {run.root} has {free / 1e9:.1f} GB free, the run needs about "
                          f"{needed / 1e9:.1f} GB for checkpoints (keep_checkpoints={cfg.keep_checkpoints}: "
                          f"{kept_pairs} pair(s) of {size / 1e9:.2f} GB each); free space or set "
                          f"keep_checkpoints=last")


def prune_checkpoints(cfg: ExperimentConfig, run: RunPaths, k: int) -> None:
    """After iteration k is recorded: `last` deletes iteration k-1's checkpoints; `none` also
    deletes iteration k's when it is the final one (adapters, metrics and eval results stay)."""
    doomed = []
    if cfg.keep_checkpoints in (KeepCheckpoints.last, KeepCheckpoints.none) and k >= 2:
        doomed.append(run.iteration(k - 1))
    if cfg.keep_checkpoints == KeepCheckpoints.none and k == cfg.iterations:
        doomed.append(run.iteration(k))
    for it in doomed:
        for ckpt, stage in ((it.instruct, Stage.distill), (it.thinking, Stage.merge)):
            if ckpt.exists():
                it.mark_pruned(stage, ckpt.name)  # first: a crash in between leaves a file a resume ignores
                shutil.rmtree(ckpt)
                log.info("keep_checkpoints=%s: removed %s", cfg.keep_checkpoints, ckpt)


class RunLock:
    """One writer per run directory: an exclusive lock (`store.locks`) on `run.lock`, held for the whole run.

    The file names its holder (pid, host, start time) for the message a second process gets. The kernel
    releases the lock when its process dies, however it dies, so a lock file left by a killed run is
    simply taken over (and said so); a run that ends removes it.
    """

    def __init__(self, run: RunPaths):
        self.path = run.lock
        self.lock: Optional[HolderLock] = None
        self.times: Optional[tuple[int, int]] = None  # the directory's (atime, mtime) when we came
        self.restore_times = False

    def leave_as_found(self) -> None:
        """A refused start: on release, the directory's times go back to what they were (the lock file we
        made and removed is no change a user should see)."""
        self.restore_times = True

    def __enter__(self) -> "RunLock":
        lock = HolderLock(self.path)
        try:
            if self.path.parent.is_dir():
                st = os.stat(self.path.parent)
                self.times = (st.st_atime_ns, st.st_mtime_ns)
            for attempt in range(3):  # a lock file its last holder removed as we opened it: open it again
                if lock.acquire():
                    break
                holder = lock.holder()
                if holder or self.path.exists() or attempt == 2:
                    raise RunInUse(f"run_dir: {self.path.parent} is in use by another thinkswitch process "
                                   f"({describe(holder)}; {self.path}); wait for it to end or stop it, or use "
                                   f"another run directory")
        except OSError as e:
            raise ConfigError(f"run_dir: cannot write to {self.path.parent} ({e.strerror or e})") from None
        if lock.stale:
            log.warning("run_dir: took over the lock of a run that is no longer running (%s)", describe(lock.stale))
        self.lock = lock
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release(remove=True)
        self.lock = None
        if self.restore_times and self.times:
            try:
                os.utime(self.path.parent, ns=self.times)
            except OSError:
                pass
