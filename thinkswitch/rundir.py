"""Guards on a run directory: it is writable, has room, and is only resumed with its own config;
and pruning of old checkpoints (`keep_checkpoints`)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from thinkswitch.config import ExperimentConfig
from thinkswitch.errors import ConfigError
from thinkswitch.io import write_text
from thinkswitch.paths import RunPaths

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
    """Record the run's config on first start; on a later start refuse a config that differs.

    Returns True when this start resumes an earlier one.
    """
    current = dataclasses.asdict(cfg)
    if not run.run_config.exists():
        write_text(run.run_config, yaml.safe_dump(current, sort_keys=False))
        return False
    started = yaml.safe_load(run.run_config.read_text())
    before, now = _comparable(started), _comparable(current)
    diffs = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
             if before.get(k) != now.get(k)]
    if diffs:
        raise ConfigError(f"{run.root} was started with another config; resuming it would mix results. "
                          f"Differing keys: {'; '.join(diffs)}. Use a new run directory, or the original "
                          f"settings (kept in {run.run_config}).")
    log.info("resuming %s: finished stages are skipped", run.root)
    return True


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
    kept_pairs = {"all": cfg.iterations, "last": 1, "none": 1}[cfg.keep_checkpoints]
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
    if cfg.keep_checkpoints in ("last", "none") and k >= 2:
        doomed.append(run.iteration(k - 1))
    if cfg.keep_checkpoints == "none" and k == cfg.iterations:
        doomed.append(run.iteration(k))
    for it in doomed:
        for ckpt in (it.instruct, it.thinking):
            if ckpt.exists():
                shutil.rmtree(ckpt)
                log.info("keep_checkpoints=%s: removed %s", cfg.keep_checkpoints, ckpt)
