"""Runs that survive: SIGKILL during each stage, then resume, ends where an uninterrupted run does."""

import os
import signal

import pytest

from tests.support import cli
from tests.support.shared import REFERENCE_ARGS
from thinkswitch.store.io import read_json
from thinkswitch.store.paths import Stage

pytestmark = pytest.mark.slow

ARGS = REFERENCE_ARGS  # the shared reference run's (conftest.reference_run): resumed runs end where it ended


def run(run_dir, *extra, base=ARGS):
    return cli.thinkswitch(*base, *extra, run_dir=run_dir, timeout=600)


def run_and_kill_at(run_dir, marker: str) -> None:
    """Start a run and SIGKILL it as soon as its log announces `marker` (a stage starting)."""
    proc = cli.start(*ARGS, run_dir=run_dir)
    for line in proc.stdout:
        if marker in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before {marker!r}"


def run_killed_after_outputs(run_dir, stage: str) -> None:
    """The worst moment: the stage wrote its outputs, then the process was SIGKILLed before its marker."""
    proc = cli.thinkswitch(f"iter_01/{stage}", *ARGS, run_dir=run_dir, module="tests.support.faulty_cli",
                           timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(reference_run):
    return read_json(reference_run / "summary.json")


STAGES = tuple(Stage)  # evaluation is two stages: evaluate_instruct, evaluate_thinking


def test_killed_in_every_stage_in_turn_then_resumed_matches_an_uninterrupted_run(reference, tmp_path):
    """One run directory, SIGKILLed once in each stage of iteration 1: after the stage wrote its outputs and before
    its marker (the worst moment; distill also as it starts). Each next run resumes it, redoing the killed stage,
    and is killed in the next one; the last run ends where the uninterrupted reference run ended."""
    run_dir = tmp_path / "run"
    it = run_dir / "iter_01"
    kills = [(s, "after outputs") for s in STAGES]
    kills.insert(2, ("distill", "at start"))
    for i, (stage, when) in enumerate(kills):
        if when == "at start":
            run_and_kill_at(run_dir, f"[iter_01] {stage}")
        else:
            run_killed_after_outputs(run_dir, stage)
        assert not (it / f"{stage}.done").exists(), f"{stage} killed {when}: a killed stage is never marked finished"
        redone = [s for s, _ in kills[:i] if s != stage]
        assert all((it / f"{s}.done").exists() for s in redone), f"resumed before {stage}: {redone} finished"
        assert not (run_dir / "summary.json").exists()
    proc = run(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(run_dir.rglob("*.tmp")), "temporary artifacts of the killed stages were cleaned up"
    resumed = read_json(run_dir / "summary.json")
    assert resumed["final"] == reference["final"] and resumed["baseline"] == reference["baseline"]
    ids = {p.name.rsplit("-", 1)[1] for p in (run_dir / "wandb").glob("offline-run-*")}
    assert len(ids) == 1, "every resumed run logs to the same W&B run id"


def test_resume_refuses_a_different_config(reference, tmp_path):
    run_dir = tmp_path / "run"
    run_and_kill_at(run_dir, "[iter_01] distill")
    proc = run(run_dir, "merge.t=0.5", "trainer.sft.learning_rate=1e-3")
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "started with another config" in out and "merge.t: 0.1 -> 0.5" in out
    assert "trainer.sft.learning_rate: 0.0005 -> 0.001" in out


def test_keep_checkpoints_last_keeps_only_the_newest_pair(testbed_pair, tmp_path):
    base = ["iterations=2", "domain.train_prompts=64", "domain.eval_size=100", "tracking.mode=disabled",
            "stage_cache=null"]
    proc = run(tmp_path, "keep_checkpoints=last", base=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "iter_01" / "instruct").exists() and not (tmp_path / "iter_01" / "thinking").exists()
    assert (tmp_path / "iter_02" / "instruct").exists() and (tmp_path / "iter_02" / "thinking").exists()
    assert (tmp_path / "iter_01" / "adapter").exists() and (tmp_path / "iter_01" / "eval_instruct.jsonl").exists()


def test_all_traces_cut_off_stops_with_a_clear_message_and_keeps_artifacts(testbed_pair, tmp_path):
    proc = run(tmp_path, "model.sampling.thinking.max_new_tokens=8")  # far too short to close a trace
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, "a known failure is one line on the console"
    assert "Traceback" in (tmp_path / "thinkswitch.log").read_text(), "its traceback is in the log file"
    assert "all 64 generations were dropped (unfinished: 64)" in out
    assert "model.sampling.thinking.max_new_tokens" in out
    failed = read_json(tmp_path / "failed.json")
    assert (failed["iteration"], failed["stage"]) == ("iter_01", "strip")
    assert (tmp_path / "iter_01" / "generations.jsonl").exists()  # kept for inspection
    assert (tmp_path / "iter_00" / "evaluate_thinking.done").exists()
    assert not (tmp_path / "iter_01" / "strip.done").exists()
