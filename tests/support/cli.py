"""The one way tests run `thinkswitch` as a user does: a process of its own from the repository root, sharing the
testbed pair's cache (conftest.CACHE) and the session's environment (offline, its own stage cache).

The process is forked from this worker's zygote (tests/support/zygote.py), which has made the imports every run makes
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
import re
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

from tests.support.paths import CACHE, ROOT

MODULE = "thinkswitch.cli"


def command(*overrides: str, run_dir: Optional[Path] = None, module: Optional[str] = None) -> list[str]:
    """`python -m thinkswitch.cli` (or a test's wrapper `module`, e.g. `tests.support.faulty_cli`) with `overrides`,
    in `run_dir` when given."""
    entry = ["-m", module or MODULE]
    return [sys.executable, *entry, *overrides, *([f"hydra.run.dir={run_dir}"] if run_dir else [])]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "THINKSWITCH_CACHE": str(CACHE), **extra}


SESSION_ENV = environment()  # as collection left it: the zygote's environment


def thinkswitch(*overrides: str, run_dir: Optional[Path] = None, module: Optional[str] = None,
                env: Optional[dict] = None, timeout: float = 900, fresh: bool = False) -> subprocess.CompletedProcess:
    """Run it to the end; the completed process (text stdout and stderr). `fresh`: in a new interpreter."""
    return python(*command(*overrides, run_dir=run_dir, module=module)[1:], env=env, timeout=timeout, fresh=fresh)


def python(*args: str, env: Optional[dict] = None, timeout: float = 900, fresh: bool = False) \
        -> subprocess.CompletedProcess:
    """`python <args>` (`-m <module> ...` or `<script> ...`) from the repository root, to the end."""
    proc = _launch([str(a) for a in args], environment(**(env or {})), merge_stderr=False, fresh=fresh)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start(*overrides: str, run_dir: Optional[Path] = None) -> subprocess.Popen | Forked:
    """Start it; its stdout and stderr together, line by line, on `.stdout`."""
    return _launch(command(*overrides, run_dir=run_dir)[1:], environment(), merge_stderr=True)


def on_vllm_ready(proc, act) -> tuple[list[str], Optional[int]]:
    """Read a run `start`ed on the vLLM engine to its end, calling `act(worker pid)` once when its worker has started
    and its engine is ready; the lines it printed and the worker's pid (None: it never started). The run is waited
    for (2 min at most, then killed)."""
    lines, worker, acted = [], None, False
    try:
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"vLLM worker pid (\d+) started", line):
                worker = int(m.group(1))
            if worker and not acted and re.search(r"vLLM \S+ engine for .* ready", line):
                act(worker)
                acted = True
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return lines, worker


def _launch(args: list[str], env: dict[str, str], merge_stderr: bool, fresh: bool = False) \
        -> subprocess.Popen | Forked:
    """`python <args>` forked from the zygote when it can be, else a new interpreter; text stdout and stderr."""
    zygote = None if fresh else _zygote_for(env)
    if zygote is None:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                preexec_fn=_as_from_a_terminal,
                                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True)
    return Forked(zygote, args, env, merge_stderr)


def _as_from_a_terminal() -> None:
    """In a new run's process before it starts Python: Ctrl-C and SIGTERM at their defaults, as from a terminal,
    even where the test session was started with them ignored (a background job of a non-interactive shell)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Forked:
    """A child of the zygote, with the parts of `subprocess.Popen` the tests use: `pid`, `args`, text `stdout` (and
    `stderr`), `poll()`, `wait(timeout)`, `communicate(timeout)`, `kill()`, `returncode` (negative: the signal that
    ended it)."""

    def __init__(self, zygote: str, args: list[str], env: dict[str, str], merge_stderr: bool):
        self.args = [sys.executable, *args]
        module = args[1] if args[0] == "-m" else None
        request = {"module": module, "script": None if module else args[0], "argv": args[2:] if module else args[1:],
                   "cwd": str(ROOT), "env": env}
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

    def communicate(self, timeout: Optional[float] = None) -> tuple[str, Optional[str]]:
        """Its streams read to the end (which a process it started may hold open) and its exit awaited."""
        streams = [f for f in (self.stdout, self.stderr) if f is not None]
        texts: dict = {}
        readers = [threading.Thread(target=lambda f: texts.__setitem__(f, f.read()), args=(f,), daemon=True)
                   for f in streams]
        for reader in readers:
            reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait(timeout)
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        for f in streams:
            f.close()
        return texts[self.stdout], texts.get(self.stderr) if self.stderr else None

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            self.conn.settimeout(timeout)
            try:
                reply = self.conn.recv(64)
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
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
    if _comparable(env) != _comparable(SESSION_ENV):
        return None
    if "proc" not in _ZYGOTE or _ZYGOTE["proc"].poll() is not None:  # first use, or it died: (re)start it
        _start_zygote()
    return _ZYGOTE.get("path")


def _comparable(env: dict[str, str]) -> dict[str, str]:
    """`env` without what pytest sets per test and torch sets when imported."""
    return {k: v for k, v in env.items() if k not in ("PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR")}


def _start_zygote() -> None:
    """Start this worker's zygote and wait for its socket (its imports take ~7 s). If it exits instead (its
    check that forked children can run torch failed, say), runs start new interpreters, with a warning."""
    if "proc" in _ZYGOTE:
        _ZYGOTE.pop("path", None)
        _stop(_ZYGOTE.pop("proc"), _ZYGOTE.pop("where"))
    where = Path(tempfile.mkdtemp(prefix="thinkswitch-zygote-"))
    path, log = where / "socket", where / "zygote.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "zygote.py"), str(path)], cwd=ROOT,
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
