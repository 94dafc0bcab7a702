"""A multirun's checks and jobs: every point validated before the first job starts (`check_sweep_points`); with
`hydra/launcher=parallel`, each job in a process of its own, so one job's death fails that job only.

hydra-joblib-launcher runs each job in a loky worker; a job SIGKILLed there (out of memory, a scheduler, a user)
takes the worker down, and loky then fails the whole pool (`TerminatedWorkerError`): jobs that were running
beside it are lost too. `isolate_parallel_jobs` (called by the CLI for a multirun) makes the launcher's worker run
each job in a child process (`python -m thinkswitch.cli_sweeps`, handed what the worker was handed) and wait for
it: a child that dies is that job's failure (`JobDied`, naming it), the worker lives on, and the other jobs run
to their end. What a job returns, or the error it failed with, comes back as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from thinkswitch.errors import ThinkSwitchError

HYDRA_VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun")


def sweep_points(args: list[str]) -> list[list[str]]:
    """The overrides of each job of `thinkswitch --multirun <args>` as the basic sweeper expands them (Hydra's own
    keys left out); none where it is not a multirun or another sweeper expands it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "--multirun" not in args and "-m" not in args:
        return []
    overrides, skip = [], False
    for arg in args:
        if not skip and not arg.startswith("-"):
            overrides.append(arg)
        skip = arg in HYDRA_VALUE_FLAGS
    if any(o.lstrip("+~").startswith("hydra/sweeper") for o in overrides):
        return []
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    return [[o for o in job if not o.lstrip("+~").startswith(("hydra.", "hydra/"))] for batch in batches
            for job in batch]


def check_sweep_points(args: list[str], compose, describe) -> bool:
    """Every point of a multirun composed (`compose`: the CLI's) and validated (`validate.check_config`) before the
    first job starts: one that cannot run is one line naming it (`describe`: a Hydra error's line), exit 2, and no
    job runs. Whether `args` are a multirun's the basic sweeper expands."""
    from hydra.errors import HydraException

    from thinkswitch.errors import ThinkSwitchError
    from thinkswitch.validate import check_config

    points = sweep_points(args)
    for point in points:
        try:
            check_config(compose(point))
        except (ThinkSwitchError, HydraException) as e:
            why = describe(e).removeprefix("error: ") if isinstance(e, HydraException) else e
            sys.stderr.write(f"error: sweep point {' '.join(point)}: {why} (no job was started)\n")
            sys.exit(getattr(e, "exit_code", 2))
    return bool(points)


NAME_MAX = 200  # bytes of a sweep job's directory name after its number (filesystems allow 255)


def job_dirname(overrides: str) -> str:
    """A sweep job's directory name (`hydra.sweep.subdir`, after its number) from its overrides: one directory
    whatever the values hold (a path's `/` becomes `_`, where Hydra would nest a directory per component), and at
    most NAME_MAX bytes (a longer one ends in a hash of the whole, so jobs keep distinct names)."""
    name = overrides.replace("/", "_")
    if len(name.encode()) > NAME_MAX:
        digest = hashlib.sha256(overrides.encode()).hexdigest()[:10]
        name = name.encode()[:NAME_MAX - 11].decode(errors="ignore") + "-" + digest
    return name


class JobDied(ThinkSwitchError):
    """A sweep job's process died (a signal, or an exit without a result)."""


@contextlib.contextmanager
def failed_jobs_in_one_line():
    """Within it, a failed job's known error is one line. Hydra's sweeper reads each job's result through
    `JobReturn.return_value`, which writes "Error executing job with overrides: [...]" to stderr above the error it
    raises; for the project's own errors (`ThinkSwitchError`) the job's overrides go on the error instead
    (`sweep_job`, printed by the CLI in its one line, `job_line`). Anything else keeps Hydra's report."""
    from hydra.core.utils import JobReturn, JobStatus

    original = JobReturn.return_value

    def return_value(self):
        error = self._return_value
        if self.status == JobStatus.FAILED and isinstance(error, ThinkSwitchError):
            error.sweep_job = list(self.overrides or [])
            raise error
        return original.fget(self)

    JobReturn.return_value = property(return_value, original.fset)
    try:
        yield
    finally:
        JobReturn.return_value = original


def job_line(error: ThinkSwitchError) -> str:
    """`error: ...`, naming the sweep job it failed where it came from one (a dead job's error names it already)."""
    job = getattr(error, "sweep_job", None)
    if job is None or isinstance(error, JobDied):
        return f"error: {error}"
    return f"error: sweep job {' '.join(job) or '(no overrides)'}: {error}"


def isolate_parallel_jobs() -> None:
    """Route hydra-joblib-launcher's jobs through `run_isolated` (a no-op where the plugin is not installed)."""
    try:
        from hydra_plugins.hydra_joblib_launcher import _core
    except ImportError:
        return
    if getattr(_core.execute_job, "__name__", "") != "run_isolated":
        _core.execute_job = run_isolated


def run_isolated(idx, overrides, *rest):
    """What hydra-joblib-launcher's `execute_job(idx, overrides, ...)` returns, computed in a child process."""
    import cloudpickle  # what joblib (loky) pickles its calls with
    from hydra.core.utils import JobReturn, JobStatus

    with tempfile.TemporaryDirectory(prefix="thinkswitch-job-") as tmp:
        request, reply = Path(tmp) / "request.pkl", Path(tmp) / "reply.pkl"
        request.write_bytes(cloudpickle.dumps((idx, overrides, *rest)))
        code = subprocess.call([sys.executable, "-m", "thinkswitch.cli_sweeps", str(request), str(reply)])
        if reply.exists():
            return cloudpickle.loads(reply.read_bytes())
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    error = JobDied(f"sweep job #{idx} ({' '.join(overrides)}) {how} before it finished; the other jobs ran on; "
                    f"run the sweep again to finish it (finished stages are kept)")
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)


def _child(request: Path, reply: Path) -> None:
    import cloudpickle  # what joblib (loky) pickles its calls with
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    ret = execute_job(*cloudpickle.loads(request.read_bytes()))
    tmp = reply.with_suffix(".tmp")
    tmp.write_bytes(cloudpickle.dumps(ret))
    os.replace(tmp, reply)


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
