"""The one way tests run `thinkswitch` as a user does: a process of its own from the repository root, sharing the
testbed pair's cache (conftest.CACHE) and the session's environment (offline, its own stage cache).

The process is forked from this worker's zygote (tests/zygote.py), which has made the imports every run makes
(~7 s each on this CPU, ~55 runs in the suite); it is otherwise what `python -m thinkswitch.cli` starts: its own
pid, streams, cwd, environment, exit status and signals. A run whose environment differs from the session's
(`env=`, or a test that changed os.environ) is a fresh interpreter, as is every run where `THINKSWITCH_TEST_FORK=0`
or Unix sockets cannot carry file descriptors."""

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
    if fresh or not _zygote_serves(environ):
        return subprocess.run(argv, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout)
    proc = Forked(argv, environ, merge_stderr=False)
    out, err = [], []
    readers = [threading.Thread(target=lambda f, into: into.append(f.read()), args=(f, into), daemon=True)
               for f, into in ((proc.stdout, out), (proc.stderr, err))]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    for reader in readers:
        reader.join()
    proc.stdout.close()
    proc.stderr.close()
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(out), "".join(err))


def start(*overrides: str, run_dir: Optional[Path] = None) -> subprocess.Popen | Forked:
    """Start it; its stdout and stderr together, line by line, on `.stdout`."""
    argv, environ = command(*overrides, run_dir=run_dir), environment()
    if not _zygote_serves(environ):
        return subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return Forked(argv, environ, merge_stderr=True)


class Forked:
    """A child of the zygote, with the parts of `subprocess.Popen` the tests use: `pid`, text `stdout` (and
    `stderr`), `poll()`, `wait(timeout)`, `kill()`, `returncode` (negative: the signal that ended it)."""

    def __init__(self, argv: list[str], env: dict[str, str], merge_stderr: bool):
        script = None if argv[1] == "-m" else argv[1]
        request = {"argv": argv[3:] if script is None else argv[2:], "module": None if script else argv[2],
                   "script": script, "cwd": str(ROOT), "env": env}
        out_r, out_w = os.pipe()
        err_r, err_w = (None, out_w) if merge_stderr else os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.conn.connect(_zygote())
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


_ZYGOTE: dict = {}


def _zygote_serves(env: dict[str, str]) -> bool:
    """Whether a run with `env` can be forked from the zygote (its environment is the session's)."""
    if os.environ.get("THINKSWITCH_TEST_FORK", "1") == "0" or not hasattr(socket, "send_fds") \
            or not hasattr(socket, "SOCK_SEQPACKET"):
        return False
    ignore = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR"}  # set by pytest; by torch when imported
    return {k: v for k, v in env.items() if k not in ignore} == \
        {k: v for k, v in SESSION_ENV.items() if k not in ignore}


def _zygote() -> str:
    """The socket of this process's zygote, started on first use (its imports take ~7 s)."""
    if "path" not in _ZYGOTE:
        where = Path(tempfile.mkdtemp(prefix="thinkswitch-zygote-"))
        path, log = where / "socket", where / "zygote.log"
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "zygote.py"), str(path)], cwd=ROOT,
                                    env=SESSION_ENV, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the test zygote did not start; its log: {log}\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        _ZYGOTE.update(path=str(path), proc=proc)
        atexit.register(_stop, proc, where)
    return _ZYGOTE["path"]


def _stop(proc: subprocess.Popen, where: Path) -> None:
    proc.kill()
    proc.wait()
    shutil.rmtree(where, ignore_errors=True)
