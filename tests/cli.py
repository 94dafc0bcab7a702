"""The one way tests run `thinkswitch` as a user does: a process of its own from the repository root, sharing the
testbed pair's cache (conftest.CACHE) and the session's environment (offline, its own stage cache).

The process is forked from this worker's zygote (tests/zygote.py), which has made the imports every run makes
(~7 s a run on this CPU, ~60 runs in the suite) and checked that a forked child can run torch; it is otherwise
what `python -m thinkswitch.cli` starts: its own pid, streams, cwd, environment, exit status and signals. A new
interpreter starts instead for `fresh=True` (the shared reference run: one cold start, as a user's, imports and
what they print included), for a run whose environment differs from the session's (`env=`, or a test that changed
os.environ), and for every run if `THINKSWITCH_TEST_FORK=0` or the zygote cannot start (a warning says why)."""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

from conftest import CACHE, ROOT

MODULE = "thinkswitch.cli"


def command(*overrides: str, run_dir: Optional[Path] = None, script: Optional[Path] = None) -> list[str]:
    """`python -m thinkswitch.cli` (or a test's wrapper `script`) with `overrides`, in `run_dir` when given."""
    entry = [str(script)] if script else ["-m", MODULE]
    return [sys.executable, *entry, *overrides, *([f"hydra.run.dir={run_dir}"] if run_dir else [])]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "THINKSWITCH_CACHE": str(CACHE), **extra}


SESSION_ENV = environment()  # as collection left it: the zygote's environment


def thinkswitch(*overrides: str, run_dir: Optional[Path] = None, script: Optional[Path] = None,
                env: Optional[dict] = None, timeout: float = 900, fresh: bool = False) -> subprocess.CompletedProcess:
    """Run it to the end; the completed process (text stdout and stderr). `fresh`: in a new interpreter."""
    return python(*command(*overrides, run_dir=run_dir, script=script)[1:], env=env, timeout=timeout, fresh=fresh)


def python(*args: str, env: Optional[dict] = None, timeout: float = 900, fresh: bool = False) \
        -> subprocess.CompletedProcess:
    """`python <args>` (`-m <module> ...` or `<script> ...`) from the repository root, to the end."""
    argv, environ = [sys.executable, *map(str, args)], environment(**(env or {}))
    zygote = None if fresh else _zygote_for(environ)
    if zygote is None:
        return subprocess.run(argv, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout)
    proc = Forked(zygote, argv, environ, merge_stderr=False)
    out, err = [], []
    readers = [threading.Thread(target=lambda f, into: into.append(f.read()), args=(f, into), daemon=True)
               for f, into in ((proc.stdout, out), (proc.stderr, err))]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    try:
        proc.wait(timeout)
        for reader in readers:  # to the end of its streams, which a process it started may hold open
            reader.join(max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(argv, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    proc.stdout.close()
    proc.stderr.close()
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(out), "".join(err))


def start(*overrides: str, run_dir: Optional[Path] = None) -> subprocess.Popen | Forked:
    """Start it; its stdout and stderr together, line by line, on `.stdout`."""
    argv, environ = command(*overrides, run_dir=run_dir), environment()
    zygote = _zygote_for(environ)
    if zygote is None:
        return subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return Forked(zygote, argv, environ, merge_stderr=True)


class Forked:
    """A child of the zygote, with the parts of `subprocess.Popen` the tests use: `pid`, text `stdout` (and
    `stderr`), `poll()`, `wait(timeout)`, `kill()`, `returncode` (negative: the signal that ended it)."""

    def __init__(self, zygote: str, argv: list[str], env: dict[str, str], merge_stderr: bool):
        script = None if argv[1] == "-m" else argv[1]
        request = {"argv": argv[3:] if script is None else argv[2:], "module": None if script else argv[2],
                   "script": script, "cwd": str(ROOT), "env": env}
        out_r, out_w = os.pipe()
        err_r, err_w = (None, out_w) if merge_stderr else os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.conn.connect(zygote)
        try:
            socket.send_fds(self.conn, [json.dumps(request).encode()], [stdin, out_w, err_w])
        finally:
            for fd in {stdin, out_w, err_w}:
                os.close(fd)
        self.pid = int(self.conn.recv(64))
        self.stdout = io.open(out_r, "r")
        self.stderr = io.open(err_r, "r") if err_r is not None else None
        self.returncode: Optional[int] = None

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            self.conn.settimeout(timeout)
            try:
                reply = self.conn.recv(64)
            except TimeoutError:
                raise subprocess.TimeoutExpired(str(self.pid), timeout) from None
            self.returncode = int(reply)
            self.conn.close()
        return self.returncode

    def poll(self) -> Optional[int]:
        try:
            return self.wait(0.001)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


_ZYGOTE: dict = {}  # this worker's: proc, path (its socket), where (its directory); or unusable (why)


def _zygote_for(env: dict[str, str]) -> Optional[str]:
    """The socket of the zygote that can fork a run with `env` (its environment must be the session's), or None:
    the run starts a new interpreter."""
    if os.environ.get("THINKSWITCH_TEST_FORK", "1") == "0" or not hasattr(socket, "send_fds") \
            or not hasattr(socket, "SOCK_SEQPACKET") or "unusable" in _ZYGOTE:
        return None
    ignore = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR"}  # set by pytest; by torch when imported
    if {k: v for k, v in env.items() if k not in ignore} != {k: v for k, v in SESSION_ENV.items() if k not in ignore}:
        return None
    if "proc" not in _ZYGOTE or _ZYGOTE["proc"].poll() is not None:  # first use, or it died: (re)start it
        _start_zygote()
    return _ZYGOTE.get("path")


def _start_zygote() -> None:
    """Start this worker's zygote and wait for its socket (its imports take ~7 s). If it exits instead (its
    check that forked children can run torch failed, say), runs start new interpreters, with a warning."""
    if "proc" in _ZYGOTE:
        _stop(_ZYGOTE.pop("proc"), _ZYGOTE.pop("where"))
    where = Path(tempfile.mkdtemp(prefix="thinkswitch-zygote-"))
    path, log = where / "socket", where / "zygote.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "zygote.py"), str(path)], cwd=ROOT,
                                env=SESSION_ENV, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    atexit.register(_stop, proc, where)
    _ZYGOTE.update(proc=proc, where=where)
    deadline = time.monotonic() + 300
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _ZYGOTE["unusable"] = f"the test zygote did not start; its log ({log}):\n{log.read_text()[-3000:]}"
            warnings.warn(_ZYGOTE["unusable"] + "\nthinkswitch runs start new interpreters", stacklevel=3)
            return
        time.sleep(0.05)
    _ZYGOTE["path"] = str(path)


def _stop(proc: subprocess.Popen, where: Path) -> None:
    proc.kill()
    proc.wait()
    shutil.rmtree(where, ignore_errors=True)
