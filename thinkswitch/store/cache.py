"""A content-addressed cache of stage outputs, shared by the runs of a sweep.

A stage's key hashes everything that determines its outputs: the stage, the identity of its input
checkpoints and data, and the config that affects it. In a sweep over `merge.t`, iteration 0's
evaluation and iteration 1's generation and distillation have the same key in every job, so they
run once and the other jobs reuse them. Entries are written to a temporary directory and renamed
into place (a job that loses the race discards its copy), hold the digests of their files, and are
verified on every restore. Entries and runs never share a file: both directions copy (a copy-on-write
clone where the filesystem supports it), and an entry's files are read-only.

Jobs that run at once take turns (`claim`): the first to miss a key takes its lock (`store.locks`, a file
per key under `<root>/.locks/`) and computes the stage; the others wait for it, naming it, then restore
what it stored; a holder that dies releases the lock and a waiter computes the stage instead.
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
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from thinkswitch.config import as_plain
from thinkswitch.store.digests import check, hash_file
from thinkswitch.store.io import atomic_path, read_json, write_json
from thinkswitch.store.locks import HolderLock, check_exclusion, describe, lock_scope

log = logging.getLogger(__name__)

DONE = "done.json"
LOCKS = ".locks"  # under the cache root: a lock file per key being computed


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


class Turns:
    """How the jobs sharing a stage cache take turns on a key: a lock file per key in `locks` (None: off).

    `take(key)` returns the key's lock once this job holds it, after waiting while another job holds it
    (said in the log and a progress bar, naming the holder's run directory). A holder that dies releases it:
    the waiter gets it and, finding no entry, computes the stage. Where locks do not exclude (`check`) or
    cannot be taken, `take` returns None at once: the job computes alone, as if no other job were running.
    """

    def __init__(self, locks: Optional[Path]):
        self.locks = locks

    def check(self) -> None:
        """A lock taken twice in `locks` must refuse the second taker; where not, say so and turn locking off.
        Also warns when the filesystem's locks exclude only processes on the same host (`lock_scope`)."""
        if self.locks is None:
            return
        try:
            self.locks.mkdir(parents=True, exist_ok=True)
            writable = os.access(self.locks, os.W_OK)
        except OSError:
            writable = False
        if not writable:  # a cache this user cannot write (store() says so): nothing to take turns on
            self.locks = None
            return
        problem = check_exclusion(self.locks)
        if problem:
            log.warning("stage cache: locks in %s do not work (%s); this run computes its stages alone, even one "
                        "another job is computing", self.locks, problem)
            self.locks = None
        elif note := lock_scope(self.locks):
            log.warning("stage cache: %s", note)

    def take(self, key: str, what: str, run: str) -> Optional[HolderLock]:
        """The key's lock, held (waiting for it if need be); None when locking is off or fails."""
        if self.locks is None:
            return None
        lock = HolderLock(self.locks / f"{key}.lock", run=run, stage=what)
        try:
            if not lock.acquire():
                self._wait(lock, what, key)
        except OSError as e:
            log.warning("stage cache: cannot lock in %s (%s); this run computes its stages alone",
                        self.locks, e.strerror or e)
            self.locks = None
            return None
        if lock.stale:
            log.warning("%s: the job that was computing it stopped before storing it (%s); computed here",
                        what, describe(lock.stale))
        return lock

    @staticmethod
    def _wait(lock: HolderLock, what: str, key: str) -> None:
        from tqdm.auto import tqdm

        holder, t0 = lock.holder(), time.perf_counter()
        log.info("%s: another job is computing it (%s); waiting to reuse it from the stage cache (key %s)",
                 what, describe(holder), key)
        bar = tqdm(desc=f"{what}: waiting for {holder.get('run', 'another job')}", bar_format="{desc} {elapsed}",
                   leave=False)
        try:
            while not lock.acquire(timeout=1.0):
                if (now := lock.holder()) and now != holder:
                    holder = now
                    log.info("%s: now computed by %s; waiting", what, describe(holder))
                    bar.set_description(f"{what}: waiting for {holder.get('run', 'another job')}")
                bar.refresh()
        finally:
            bar.close()
        log.info("%s: waited %.1f s for another job", what, time.perf_counter() - t0)


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
        self.turns = Turns(self.root / LOCKS if self.root else None)  # turns.check() at a run's start

    @contextmanager
    def claim(self, key: Optional[str], names: list[str], dest: Path, what: str) -> Iterator[Optional[Entry]]:
        """The stage's entry, restored into `dest`; or None, with the key's lock held until the block ends:
        the caller computes and stores the stage, and no other job computes it meanwhile. A job that finds
        the key being computed waits for it (logged, with the holder's run directory), then restores it."""
        entry = self.restore(key, names, dest) if key and self.root else None
        lock = self.turns.take(key, what, str(dest)) if key and self.root and entry is None else None
        try:
            yield entry if lock is None else self.restore(key, names, dest)
        finally:
            if lock is not None:
                lock.release()

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
            drop_entry(self.root, key, f"{DONE} unreadable ({e})")
            return None
        if not record:
            drop_entry(self.root, key, "written by an older version: no digests to verify it by")
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
                drop_entry(self.root, key, problem)
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


def drop_entry(root: Path, key: str, why: str) -> None:
    """Remove a damaged entry (renamed away first: no job ever sees half of it) and say so."""
    entry, note = root / key, ""
    try:
        grave = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".dropped.tmp", dir=root))
        try:
            os.rename(entry, grave / key)
        finally:
            shutil.rmtree(grave, ignore_errors=True)
    except FileNotFoundError:
        pass  # another job dropped it first
    except OSError as e:
        note = f"; it could not be removed ({e.strerror or e})"
    log.warning("stage cache: entry %s is damaged (%s); not used, the stage is recomputed%s", key, why, note)
