"""`python tests/support/zygote.py <socket>`: a process that imports what every `thinkswitch` run imports (torch,
transformers, peft, TRL, mergekit, W&B, Hydra: ~7 s of a test's run on this CPU), then forks one child per request
on a Unix socket. Each child is a `thinkswitch` process as a user starts it (its own pid, stdin/stdout/stderr,
cwd, environment, exit status, signals), minus the imports. One per pytest worker, started by `cli.py`.

Request (one SOCK_SEQPACKET message, three file descriptors: the child's stdin, stdout, stderr):
`{"argv": [...], "module": "thinkswitch.cli" | null, "script": path | null, "cwd": ..., "env": {...}}`.
Replies on the same connection: the child's pid, then, once it has ended, its exit code as `subprocess` gives it
(negative: killed by that signal)."""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import socket
import sys
import time


def preload() -> None:
    """The libraries a run imports, and the project's modules that import them (the child imports the rest)."""
    import datasets  # noqa: F401
    import mergekit.config  # noqa: F401
    import mergekit.merge  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401
    import wandb  # noqa: F401
    from mergekit.merge_methods import registry  # noqa: F401
    from trl import SFTConfig, SFTTrainer  # noqa: F401

    import thinkswitch.loop  # noqa: F401
    import thinkswitch.setup  # noqa: F401


def forked_torch_runs() -> bool:
    """Whether a forked child can run torch on several threads: not if this process had started GNU OpenMP's
    thread pool (a parallel op in an import), whose threads a child does not have: it would hang."""
    pid = os.fork()
    if pid == 0:
        import torch

        x, m = torch.ones(4_000_000), torch.ones(512, 512)
        os._exit(0 if (x + 1).sum().item() == 8_000_000 and (m @ m)[0, 0].item() == 512 else 1)
    deadline = time.monotonic() + 20  # a healthy child takes well under a second
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def reap(children: dict[int, socket.socket]) -> None:
    """Send each ended child's exit code to whoever asked for it."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.send(str(os.waitstatus_to_exitcode(status)).encode())
            except OSError:  # the test stopped waiting
                pass
            conn.close()


def serve(path: str) -> dict:
    """Fork a child per request until killed (at the pytest worker's exit) or orphaned; returns, in each
    child, that child's request."""
    parent = os.getppid()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path + ".tmp")
    server.listen(16)
    os.rename(path + ".tmp", path)  # ready: the imports are done
    children: dict[int, socket.socket] = {}
    while os.getppid() == parent:
        ready, _, _ = select.select([server], [], [], 0.05)
        reap(children)
        if not ready:
            continue
        conn, _ = server.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            server.close()
            for other in children.values():
                other.close()
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            return request
        for fd in fds:
            os.close(fd)
        conn.send(str(pid).encode())
        children[pid] = conn
    os._exit(0)


def run(request: dict) -> None:
    """Run the request as `python -m <module> args` or `python <script> args` would, started from a terminal: Ctrl-C
    and SIGTERM as a new interpreter has them, even where the test session was started with them ignored (a
    background job of a non-interactive shell ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["module"]:
        sys.argv = [request["module"], *request["argv"]]
        sys.path[0] = request["cwd"]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    else:
        sys.argv = [request["script"], *request["argv"]]
        sys.path[0] = os.path.dirname(os.path.abspath(request["script"]))
        runpy.run_path(request["script"], run_name="__main__")


if __name__ == "__main__":
    preload()
    if not forked_torch_runs():
        sys.exit("a forked child cannot run torch here (it hangs or fails): no zygote")
    run(serve(sys.argv[1]))  # in a child: exits as a Python process does (atexit, flushed streams)
