"""SIGTERM (a scheduler's stop) and Ctrl-C (SIGINT) end a run like a known error: one line naming where it stopped
and how to resume, failed.json, the run lock released, exit 143 / 130, the traceback in the log file only; the
resumed run ends where an uninterrupted one does."""

import os
import signal

import pytest

from tests.support import cli
from tests.support.shared import REFERENCE_ARGS
from thinkswitch.stopping import Stopped, stop_on_signals, stopped_line
from thinkswitch.store.io import read_json


def stop_at(run_dir, marker: str, sig: int) -> tuple[int, list[str]]:
    """Start the reference run's config in `run_dir`; send `sig` once its log announces `marker`."""
    proc = cli.start(*REFERENCE_ARGS, run_dir=run_dir)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            os.kill(proc.pid, sig)
    return proc.wait(timeout=120), lines


def check_stopped(run_dir, code: int, lines: list[str], sig: int, expected_code: int, where: str) -> None:
    out = "".join(lines)
    assert code == expected_code, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    said = [line for line in lines if "stopped by" in line]
    assert len(said) == 1, out[-3000:]
    assert f"stopped by {signal.Signals(sig).name} in {where}" in said[0]
    assert f"rerun with hydra.run.dir={run_dir} to resume" in said[0]
    failed = read_json(run_dir / "failed.json")
    assert f"{failed['iteration']} {failed['stage']}" == where and "Stopped" in failed["error"]
    assert not (run_dir / "run.lock").exists(), "the lock is released"
    assert "Traceback" in (run_dir / "thinkswitch.log").read_text(), "the traceback is in the log file"


@pytest.mark.slow
def test_sigterm_and_ctrl_c_in_two_stages_then_resumed_equals_an_uninterrupted_run(reference_run, tmp_path):
    run_dir = tmp_path / "run"
    code, lines = stop_at(run_dir, "[iter_01] generate", signal.SIGTERM)
    check_stopped(run_dir, code, lines, signal.SIGTERM, 143, "iter_01 generate")
    code, lines = stop_at(run_dir, "[iter_01] distill", signal.SIGINT)
    check_stopped(run_dir, code, lines, signal.SIGINT, 130, "iter_01 distill")
    assert (run_dir / "iter_01" / "generate.done").exists()
    proc = cli.thinkswitch(*REFERENCE_ARGS, run_dir=run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FutureWarning" not in proc.stdout + proc.stderr, "this run distilled, without a library's FutureWarning"
    assert not (run_dir / "failed.json").exists()
    for name in ("eval_instruct.jsonl", "eval_thinking.jsonl", "pairs.jsonl", "generations.jsonl"):
        assert (run_dir / "iter_01" / name).read_bytes() == (reference_run / "iter_01" / name).read_bytes(), name
    assert read_json(run_dir / "summary.json")["final"] == read_json(reference_run / "summary.json")["final"]


def test_a_signal_raises_stopped_once_then_the_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stop, stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):  # the handler runs between bytecodes
            pass
    assert stop.value.exit_code == 143 and str(stop.value) == "stopped by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before
    assert stopped_line(Stopped(signal.SIGINT), "r", None) == "stopped by SIGINT before the run started; " \
                                                               "nothing was written"
    assert stopped_line(Stopped(signal.SIGINT), "r", {"iteration": None, "stage": "setup"}).startswith(
        "stopped by SIGINT in setup; finished stages are kept: rerun with hydra.run.dir=r")
