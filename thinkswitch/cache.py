"""A content-addressed cache of stage outputs, shared by the runs of a sweep.

A stage's key hashes everything that determines its outputs: the stage, the identity of its input
checkpoints and data, and the config that affects it. In a sweep over `merge.t`, iteration 0's
evaluation and iteration 1's generation and distillation have the same key in every job, so they
run once and the other jobs reuse them. Entries are written to a temporary directory and renamed
into place (a job that loses the race discards its copy), and restored into a run directory by
hard links where the filesystem allows (no extra disk), else by copies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from thinkswitch.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

DONE = "done.json"


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def digest(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts (config dataclasses included)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=_plain).encode()).hexdigest()[:20]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:20]


def checkpoint_id(ref: str, revision: Optional[str] = None) -> str:
    """Identity of a starting checkpoint: a hub id and revision, or a local directory's files."""
    path = Path(ref).expanduser()
    if not path.is_dir():
        return digest("hub", ref, revision)
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())
    return digest("local", str(path.resolve()), files)


def _link_tree(src: Path, dst: Path) -> None:
    """Copy `src` to `dst`, hard-linking large files (weights: never modified in place)."""
    def link(s: str, d: str) -> None:
        if os.path.getsize(s) < 1 << 20:
            shutil.copy2(s, d)
            return
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    else:
        link(str(src), str(dst))


class StageCache:
    """Stage outputs by key under `root` (None: disabled)."""

    def __init__(self, root: Optional[Path]):
        self.root = Path(root) if root else None

    def restore(self, key: str, names: list[str], dest: Path) -> Optional[dict]:
        """Put a cached stage's outputs into `dest`; return its metrics, or None on a miss."""
        if self.root is None or not (self.root / key / DONE).exists():
            return None
        entry = self.root / key
        for name in names:
            with atomic_path(dest / name) as tmp:
                _link_tree(entry / name, tmp)
        return read_json(entry / DONE)["metrics"]

    def store(self, key: str, names: list[str], src: Path, metrics: dict) -> None:
        """Add a stage's outputs under `key` (another job that stored it first wins: its copy is as good)."""
        if self.root is None or (self.root / key / DONE).exists():
            return
        try:
            with atomic_path(self.root / key, replace=False) as tmp:
                tmp.mkdir()
                for name in names:
                    _link_tree(src / name, tmp / name)
                write_json(tmp / DONE, {"metrics": metrics, "outputs": names})
        except OSError as e:  # a cache that cannot be written never fails the run
            log.warning("stage cache: could not store %s (%s)", key, e)
