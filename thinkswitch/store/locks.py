"""Locks between processes, one mechanism for the whole project: `filelock` (an exclusive `flock(2)` on a
lock file), wrapped so that the file names its holder.

- `HolderLock`: the lock; its file holds the holder's pid, host, start time and what it does (a run
  directory), for the processes that find it taken. The kernel releases a `flock` when its process dies,
  however it dies (SIGKILL included), so a dead holder never blocks anyone: the next taker goes on (and
  sees what the dead one left in the file: `stale`).
- `check_exclusion(directory)`: whether two locks on one file in `directory` exclude each other (the start
  of a run checks its stage cache's; a filesystem without `flock`, or one that grants it twice, is found),
  and `lock_scope(path)`: a note when the filesystem's locks only exclude processes on the same host.
- `claim_one(names, directory)`: the first free of several resources (one GPU per job), waiting while all
  are taken.

What a shared filesystem (a stage cache on NFS for a SLURM sweep) must give: `flock` that excludes across
hosts. Linux's NFS client implements `flock` with NFS byte-range locks (NLM on NFSv3, the server's lock
state on NFSv4), so it does, unless the mount says `local_lock=flock|all` or `nolock` (locks stay on each
host); Lustre needs the `flock` mount option (`localflock`: per host; `noflock`: no `flock`); CIFS `nobrl`
keeps locks local. A lock that excludes only per host costs time, not correctness: the stage cache's entries
are written under a temporary name and renamed into place, so two hosts computing one stage keep one copy.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


class HolderLock:
    """An exclusive lock on `path` whose file names its holder (`holder()`, read by those who wait).

    `stale`: what the last holder left in the file when it died holding the lock (empty after a clean
    release: the file is emptied, or removed with `release(remove=True)`)."""

    def __init__(self, path: Path, **about: str):
        self.path = Path(path)
        self.about = about
        self.stale: dict = {}
        self._fd: Optional[int] = None
        self._lock = FileLock(self.path, thread_local=False, fallback_to_soft=False, on_acquired=self._sign)

    def _sign(self, fd: int) -> None:
        self.stale = _read(lambda: os.pread(fd, 65536, 0))
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now().astimezone().isoformat(timespec="seconds"), **self.about}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd

    def acquire(self, timeout: float = 0) -> bool:
        """Whether the lock is ours within `timeout` seconds (0: one try; negative: wait for it).
        An OSError: the lock file cannot be created or locked there."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=timeout, blocking=timeout != 0, poll_interval=0.05)
        except Timeout:
            return False
        return True

    def holder(self) -> dict:
        """Who holds it, as they wrote it ({} when unknown: just starting, or gone)."""
        return _read(lambda: self.path.read_bytes())

    def release(self, remove: bool = False) -> None:
        """Let it go; the file is emptied (a later taker sees no stale holder), or removed."""
        if self._fd is None:
            return
        try:
            if remove:
                self.path.unlink(missing_ok=True)  # while still held: nobody else holds this file
            else:
                os.ftruncate(self._fd, 0)
        except OSError:
            pass
        self._fd = None
        self._lock.release()

    def __enter__(self) -> "HolderLock":
        self.acquire(timeout=-1)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read(get: Callable[[], bytes]) -> dict:
    try:
        info = json.loads(get() or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe(holder: dict) -> str:
    """A holder in words: pid, host, start time and, when it said, its run directory."""
    if not holder:
        return "holder unknown: it is just starting"
    where = f", run {holder['run']}" if holder.get("run") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}{where}"


def check_exclusion(directory: Path) -> Optional[str]:
    """None when a lock on a file in `directory` refuses a second taker (another descriptor of the same
    file, as another process would open it); else why locks there cannot be relied on (one line)."""
    probe = Path(directory) / f".probe-{socket.gethostname()}-{os.getpid()}.lock"
    first, second = HolderLock(probe), HolderLock(probe)
    try:
        if not first.acquire():
            return f"a probe lock {probe} was already taken"
        try:
            if second.acquire():
                second.release()
                return "a second lock on the same file was granted while the first was held (flock does not exclude)"
        finally:
            first.release(remove=True)
    except OSError as e:
        return f"flock does not work there ({e.strerror or e})"
    return None


def lock_scope(path: Path, mountinfo: Optional[str] = None) -> Optional[str]:
    """A note when `path` is on a filesystem whose locks only exclude processes on the same host (from its
    mount options in `mountinfo`, default /proc/self/mountinfo); None otherwise, or where that cannot be read."""
    try:
        text = Path("/proc/self/mountinfo").read_text() if mountinfo is None else mountinfo
    except OSError:
        return None
    mounts = [line.split() for line in text.splitlines() if line.strip()]
    target, best = str(Path(path).resolve()), None
    for f in mounts:
        point = f[4].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and (
                best is None or len(point) >= len(best[4])):
            best = f
    if best is None or "-" not in best:
        return None
    tail = best[best.index("-") + 1:]
    fstype, options = tail[0], set(",".join([best[5], *tail[2:3]]).split(","))
    local = {"nfs": {"local_lock=flock", "local_lock=all", "nolock"}, "nfs4": {"local_lock=flock", "local_lock=all"},
             "lustre": {"localflock"}, "cifs": {"nobrl"}, "smb3": {"nobrl"}}.get(fstype, set()) & options
    if local:
        return (f"{best[4]} is {fstype} mounted with {', '.join(sorted(local))}: its locks exclude only processes "
                f"on the same host, so jobs on other hosts may compute a shared stage again")
    return None


def claim_one(names: list[str], directory: Path, poll: float = 1.0, **about: str) -> tuple[int, HolderLock]:
    """The index of the first of `names` no other process holds, and its lock (held until released: at
    the latest when this process ends). While all are taken, waits, saying so once with their holders."""
    locks = [HolderLock(Path(directory) / f"{name}.lock", **about) for name in names]
    said = False
    while True:
        for i, lock in enumerate(locks):
            if lock.acquire():
                return i, lock
        if not said:
            log.info("all %d of %s are in use (%s); waiting for one to be free", len(names), names,
                     "; ".join(describe(lock.holder()) for lock in locks))
            said = True
        time.sleep(poll)
