"""A parallel sweep (`hydra/launcher=parallel`) whose job is SIGKILLed mid-stage: that job fails, alone, in one line
naming it; the job beside it (waiting on the stage the dead one held) takes the stage over and finishes."""

import os
import signal
from pathlib import Path

import pytest

from tests.support import cli


def job_processes() -> list[int]:
    """This machine's `python -m thinkswitch.cli_sweeps` children (one per running sweep job)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"thinkswitch.cli_sweeps" in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_a_killed_job_fails_alone_and_the_other_finishes(testbed_pair, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli.start("--multirun", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "merge.t=0.1,0.5",
                     "iterations=0", "domain.eval_size=16", "tracking.mode=disabled",
                     f"stage_cache={tmp_path / 'stages'}", f"hydra.sweep.dir={sweep}")
    before, lines, killed = set(job_processes()), [], None
    for line in proc.stdout:
        lines.append(line)
        if killed is None and "[iter_00] evaluate" in line:
            mine = sorted(set(job_processes()) - before)
            if mine:
                killed = mine[0]
                os.kill(killed, signal.SIGKILL)
    proc.wait(timeout=300)
    out = "".join(lines)
    assert killed and proc.returncode == 1, out[-3000:]
    assert "TerminatedWorkerError" not in out and "Traceback" not in out, out[-3000:]
    assert "Error executing job" not in out, "one line: Hydra's own line above ours is folded into it"
    [error] = [line for line in lines if line.startswith("error: ")]
    assert "was killed by SIGKILL before it finished; the other jobs ran on" in error, error
    finished = [d for d in sweep.iterdir() if (d / "summary.json").exists()]
    assert len(finished) == 1, "the job beside the dead one ran to its end"
    assert ("merge.t=0.5" if "merge.t=0.1" in error else "merge.t=0.1") in finished[0].name, "the other one"


def test_a_failed_jobs_known_error_is_one_line_naming_the_job(capsys):
    from hydra.core.utils import JobReturn, JobStatus

    from thinkswitch.cli_sweeps import JobDied, failed_jobs_in_one_line, job_line
    from thinkswitch.errors import ConfigError, DataError

    with failed_jobs_in_one_line():
        failed = JobReturn(overrides=["merge.t=0.1"], status=JobStatus.FAILED, _return_value=DataError("bad row"))
        with pytest.raises(DataError) as caught:
            _ = failed.return_value
        assert job_line(caught.value) == "error: sweep job merge.t=0.1: bad row"
        died = JobReturn(overrides=["merge.t=0.5"], status=JobStatus.FAILED,
                         _return_value=JobDied("sweep job #1 (merge.t=0.5) was killed"))
        with pytest.raises(JobDied) as caught:
            _ = died.return_value
        assert job_line(caught.value) == "error: sweep job #1 (merge.t=0.5) was killed", "named once"
        bug = JobReturn(overrides=["merge.t=0.7"], status=JobStatus.FAILED, _return_value=KeyError("x"))
        with pytest.raises(KeyError):
            _ = bug.return_value
        assert "Error executing job with overrides: ['merge.t=0.7']" in capsys.readouterr().err, \
            "anything else keeps Hydra's report"
        assert JobReturn(status=JobStatus.COMPLETED, _return_value=0.5).return_value == 0.5
    assert job_line(ConfigError("x")) == "error: x", "outside a sweep"
    with pytest.raises(DataError):
        _ = JobReturn(overrides=["a=1"], status=JobStatus.FAILED, _return_value=DataError("y")).return_value
    assert "Error executing job" in capsys.readouterr().err, "Hydra's own behaviour restored"
