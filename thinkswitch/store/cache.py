"""A content-addressed cache of stage outputs, shared by the runs of a sweep.

A stage's key hashes everything that determines its outputs: the stage, the identity of its input
checkpoints and data, and the config that affects it. In a sweep over `merge.t`, iteration 0's
evaluation and iteration 1's generation and distillation have the same key in every job, so they
run once and the other jobs reuse them. Entries are written to a temporary directory and renamed
into place (a job that loses the race discards its copy), hold the digests of their files, and are
verified on every restore. Entries and runs never share a file: both directions copy (a copy-on-write
clone where the filesystem supports it), and an entry's files are read-only.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from thinkswitch.config import as_plain
from thinkswitch.store.digests import check, hash_file
from thinkswitch.store.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

DONE = "done.json"


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return as_plain(obj)
    return str(obj)


def digest(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts (config dataclasses included)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=_plain).encode()).hexdigest()[:20]


def file_digest(path: Path) -> str:
    """A file's SHA-256 (digests.hash_file), short: part of a cache key."""
    return hash_file(path)[:20]


def checkpoint_id(ref: str, revision: Optional[str] = None) -> str:
    """Identity of a starting checkpoint: a hub id and revision, or a local directory's files."""
    path = Path(ref).expanduser()
    if not path.is_dir():
        return digest("hub", ref, revision)
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())
    return digest("local", str(path.resolve()), files)


FICLONE = 0x40049409  # Linux ioctl: a copy-on-write clone of a file (btrfs, XFS, bcachefs; not ext4)


def copy_file(src: Path, dst: Path) -> None:
    """A copy of `src` at `dst` that shares nothing with it: a copy-on-write clone where the filesystem can
    (instant, no extra disk until either changes), else an in-kernel copy (`shutil.copyfile`: sendfile)."""
    try:
        with open(src, "rb") as fs, open(dst, "wb") as fd:
            fcntl.ioctl(fd.fileno(), FICLONE, fs.fileno())
        return
    except OSError:
        pass
    shutil.copyfile(src, dst)


def copy_tree(src: Path, dst: Path, read_only: bool = False) -> None:
    """Copy a file or a directory tree; `read_only`: its files are made read-only (chmod a-w)."""
    src, dst = Path(src), Path(dst)
    files = [(src, dst)] if src.is_file() else []
    if src.is_dir():
        for d in [src, *sorted(p for p in src.rglob("*") if p.is_dir())]:
            (dst / d.relative_to(src)).mkdir(parents=True, exist_ok=True)
        files = [(f, dst / f.relative_to(src)) for f in sorted(src.rglob("*")) if f.is_file()]
    for s, d in files:
        copy_file(s, d)
        if read_only:
            os.chmod(d, 0o444)


@dataclasses.dataclass(frozen=True)
class Entry:
    """A verified stage-cache entry: the stage's metrics and the digests of its outputs."""

    metrics: dict
    digests: dict


class StageCache:
    """Stage outputs by key under `root` (None: disabled).

    An entry is a directory `<root>/<key>/` with the stage's outputs (read-only files) and `done.json`
    (metrics, output names, digests). It is built under a temporary name and renamed into place, so a
    crash or a full disk mid-store leaves no entry; a restore copies the outputs into the run and checks
    the copies against the digests before anything is used: a damaged entry is dropped (recomputed).
    """

    def __init__(self, root: Optional[Path]):
        self.root = Path(root) if root else None
        self.storing = True  # off after a store failed (a read-only or full cache): warned once

    def restore(self, key: str, names: list[str], dest: Path) -> Optional[Entry]:
        """Put a cached stage's outputs into `dest`, verified; None on a miss or a damaged entry."""
        if self.root is None:
            return None
        entry = self.root / key
        try:
            if not (entry / DONE).exists():
                return None
        except OSError as e:  # a cache directory this user cannot read: a miss
            log.warning("stage cache: cannot read %s (%s); the stage is computed", entry, e.strerror or e)
            return None
        try:
            info = read_json(entry / DONE)
            metrics, record = info["metrics"], info.get("digests")
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._drop(key, f"{DONE} unreadable ({e})")
            return None
        if not record:
            self._drop(key, "written by an older version: no digests to verify it by")
            return None
        staging = Path(tempfile.mkdtemp(prefix=f".restore-{key}.", suffix=".tmp", dir=dest))
        try:
            for name in names:
                copy_tree(entry / name, staging / name)
            try:
                problem = check(staging, record, names, shown=staging)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                problem = f"malformed digests in {DONE} ({e!r})"
            if problem:
                self._drop(key, problem)
                return None
            for name in names:
                target = dest / name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(staging / name, target)
        except OSError as e:
            log.warning("stage cache: could not restore %s (%s); the stage is recomputed", key, e)
            return None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Entry(metrics, record)

    def store(self, key: str, names: list[str], src: Path, metrics: dict, digests: dict) -> None:
        """Add a stage's outputs under `key` (another job that stored it first wins: its copy is as good).
        Never fails the run: a cache that cannot be written is warned about once and not written again."""
        if self.root is None or not self.storing:
            return
        try:
            if (self.root / key / DONE).exists():
                return
            with atomic_path(self.root / key, replace=False) as tmp:
                tmp.mkdir()
                for name in names:
                    copy_tree(src / name, tmp / name, read_only=True)
                write_json(tmp / DONE, {"metrics": metrics, "outputs": names, "digests": digests})
        except OSError as e:
            self.storing = False
            log.warning("stage cache: cannot store stages in %s (%s); this run goes on without storing them",
                        self.root, e.strerror or e)

    def _drop(self, key: str, why: str) -> None:
        """Remove a damaged entry (renamed away first: no job ever sees half of it) and say so."""
        entry, note = self.root / key, ""
        try:
            grave = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".dropped.tmp", dir=self.root))
            try:
                os.rename(entry, grave / key)
            finally:
                shutil.rmtree(grave, ignore_errors=True)
        except FileNotFoundError:
            pass  # another job dropped it first
        except OSError as e:
            note = f"; it could not be removed ({e.strerror or e})"
        log.warning("stage cache: entry %s is damaged (%s); not used, the stage is recomputed%s", key, why, note)
