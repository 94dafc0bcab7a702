"""One process writes a run directory: a second is refused naming the holder, a dead holder's lock is taken over, and
a second `thinkswitch` in a running run directory exits with code 3."""

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.paths import ROOT
from tests.support.reference import SMALL, console, thinkswitch
from thinkswitch.errors import RunInUse
from thinkswitch.store.paths import RunPaths
from thinkswitch.store.rundir import RunLock

HOLD = """
import sys, time
from pathlib import Path
from thinkswitch.store.paths import RunPaths
from thinkswitch.store.rundir import RunLock
with RunLock(RunPaths(Path({run!r}))):
    print("holding", flush=True)
    time.sleep(120)
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(run=str(run_dir))],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    run = RunPaths(tmp_path / "run")
    holder = hold_lock(run.root)
    try:
        with pytest.raises(RunInUse) as err:
            with RunLock(run):
                pass
        msg = str(err.value)
        assert f"pid {holder.pid} on {os.uname().nodename}, started 20" in msg and "\n" not in msg
        assert err.value.exit_code == 3
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding it: the lock file stays behind
        holder.wait()
    assert run.lock.exists()
    with caplog.at_level(logging.WARNING):
        with RunLock(run):
            assert json.loads(run.lock.read_text())["pid"] == os.getpid()
    assert f"took over the lock of a run that is no longer running (pid {holder.pid}" in caplog.text
    assert not run.lock.exists(), "a run that ends removes its lock file"


@pytest.mark.slow
def test_a_second_process_in_a_running_run_directory_is_refused(testbed_pair, tmp_path):
    run_dir = tmp_path / "run"
    first = cli.start(*SMALL, run_dir=run_dir)
    try:
        for line in first.stdout:
            if "[iter_00] evaluate" in line:
                break
        proc = thinkswitch(run_dir)
        assert proc.returncode == 3
        lines = console(proc)
        assert len(lines) == 1 and f"is in use by another thinkswitch process (pid {first.pid} on" in lines[0], lines
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
