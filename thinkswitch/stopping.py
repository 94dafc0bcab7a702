"""How a run that ends early says so, in one line: a known error (`error_line`), or a stop by a signal.

SIGTERM (a scheduler's stop: SLURM, Kubernetes and `kill` send it first) and SIGINT (Ctrl-C) end a run like a
known error: `Stopped` is raised in the main thread, so every `finally` and `with` on the way out runs (the stage's
partial file closed, a vLLM worker stopped, `failed.json` written, the run lock released); the CLI then prints one
line naming where the run stopped and how to resume, and exits 128 + the signal (143, 130). The traceback goes to
the log file only. A second signal of the same kind while the run winds down does what it does by default."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal. A KeyboardInterrupt (not an Exception): code that tolerates errors does not
    swallow it, and libraries that clean up on Ctrl-C do so for SIGTERM too."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGTERM and SIGINT raise `Stopped` (in the main thread only: elsewhere nothing changes; a
    signal the process was started ignoring stays ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def stop(signum: int, frame: Optional[object]) -> None:
        restore()  # a second signal: its default
        raise Stopped(signum)

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    for s in SIGNALS:
        if previous[s] != signal.SIG_IGN:  # started with it ignored (nohup, a background job): left so
            signal.signal(s, stop)
    try:
        yield
    finally:
        restore()


def stopped_line(error: Stopped, run_dir: str, where: Optional[dict]) -> str:
    """The one line of a stopped run; `where`: its failed.json (iteration, stage), None when it had not started."""
    line = str(error)
    if where is None:
        return line + " before the run started; nothing was written"
    if where.get("iteration"):
        line += f" in {where['iteration']} {where['stage']}"
    else:
        line += f" in {where.get('stage', 'setup')}"
    return line + f"; finished stages are kept: rerun with hydra.run.dir={run_dir} to resume"


def error_line(error: BaseException, run_dir: str, started: bool) -> str:
    """The one line of a known error: where the run stopped and how to resume, once it had started."""
    from thinkswitch.errors import DiskFull
    from thinkswitch.store.io import read_json
    from thinkswitch.store.paths import RunPaths

    line = f"error: {error}"
    failed = RunPaths(Path(run_dir)).failed
    if started and failed.exists() and read_json(failed).get("iteration"):
        where = read_json(failed)
        line += (f" [in {where['iteration']} {where['stage']}; finished stages are kept: rerun with "
                 f"hydra.run.dir={run_dir} to resume]")
    elif started and isinstance(error, DiskFull):  # failed.json could not be written either
        line += f" [free space, then rerun with hydra.run.dir={run_dir}: finished stages are kept]"
    return line
