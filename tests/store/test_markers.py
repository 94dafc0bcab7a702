"""Completion markers: a finished stage whose outputs are intact is skipped; one whose outputs changed is redone (or,
when it cannot be, stops naming both files); unreadable and older markers. The fast tests drive the stage runner with
a stand-in stage; the slow one damages a copy of the reference run and resumes it."""

import logging
import shutil
from pathlib import Path

import pytest

from tests.support.damage import CORRUPTIONS, flip_a_byte, make_outputs, truncate
from tests.support.reference import copy_of, same_scores, thinkswitch
from thinkswitch.errors import StageError
from thinkswitch.store.cache import StageCache
from thinkswitch.store.digests import check
from thinkswitch.store.paths import IterationPaths
from thinkswitch.store.runner import StageRunner


class Stage:
    """A stand-in stage writing `pairs.jsonl` and a checkpoint directory; counts its runs."""

    def __init__(self, it: IterationPaths):
        self.it, self.runs = it, 0

    def __call__(self) -> dict:
        self.runs += 1
        for p in (self.it.root / "pairs.jsonl", self.it.root / "ckpt"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        make_outputs(self.it.root)
        return {"stage/runs": self.runs}


def finished_stage(tmp_path, needs=()):
    it = IterationPaths(tmp_path / "run" / "iter_01")
    runner, stage = StageRunner(StageCache(None)), Stage(it)
    outputs = [it.root / "pairs.jsonl", it.root / "ckpt"]
    runner(it, "distill", stage, outputs=outputs, needs=needs)
    assert stage.runs == 1 and "digests" in it.done_info("distill")
    return it, runner, stage, outputs


def test_a_finished_stage_with_intact_outputs_is_skipped(tmp_path):
    it, runner, stage, outputs = finished_stage(tmp_path)
    marker = it.marker("distill").stat().st_mtime_ns
    assert runner(it, "distill", stage, outputs=outputs)["stage/runs"] == 1
    assert stage.runs == 1 and it.marker("distill").stat().st_mtime_ns == marker


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_finished_stage_whose_outputs_changed_is_redone_with_a_warning(tmp_path, caplog, corruption):
    it, runner, stage, outputs = finished_stage(tmp_path)
    CORRUPTIONS[corruption][0](it.root)
    with caplog.at_level(logging.WARNING):
        metrics = runner(it, "distill", stage, outputs=outputs)
    assert stage.runs == 2 and metrics["stage/runs"] == 2
    assert "the stage is redone" in caplog.text and CORRUPTIONS[corruption][1] in caplog.text
    assert check(it.root, it.done_info("distill")["digests"], ["pairs.jsonl", "ckpt"]) is None


def test_an_unreadable_marker_is_a_redo(tmp_path, caplog):
    it, runner, stage, outputs = finished_stage(tmp_path)
    it.marker("distill").write_text('{"metrics": ')
    with caplog.at_level(logging.WARNING):
        runner(it, "distill", stage, outputs=outputs)
    assert stage.runs == 2 and "distill.done: unreadable" in caplog.text


def test_a_marker_of_an_older_version_is_accepted_with_a_log_line(tmp_path, caplog):
    it, runner, stage, outputs = finished_stage(tmp_path)
    it.mark_done("distill", {"metrics": {"stage/runs": 1}})  # as versions before digests wrote it
    truncate(it.root / "pairs.jsonl")
    with caplog.at_level(logging.INFO):
        runner(it, "distill", stage, outputs=outputs)
    assert stage.runs == 1 and "older version (no digests): outputs not verified" in caplog.text


def test_outputs_removed_by_keep_checkpoints_are_not_looked_for(tmp_path):
    it, runner, stage, outputs = finished_stage(tmp_path)
    it.mark_pruned("distill", "ckpt")
    shutil.rmtree(it.root / "ckpt")
    runner(it, "distill", stage, outputs=outputs)
    assert stage.runs == 1 and it.done_info("distill")["pruned"] == ["ckpt"]


def test_a_changed_output_whose_stage_cannot_be_redone_stops_naming_both_files(tmp_path):
    needs = [tmp_path / "run" / "iter_00" / "instruct", "Qwen/Qwen3-4B-Instruct-2507"]  # a hub id is not checked
    (tmp_path / "run" / "iter_00" / "instruct").mkdir(parents=True)
    it, runner, stage, outputs = finished_stage(tmp_path, needs=needs)
    (tmp_path / "run" / "iter_00" / "instruct").rmdir()  # e.g. pruned by keep_checkpoints=last
    flip_a_byte(it.root / "ckpt" / "model-00001-of-00002.safetensors")
    with pytest.raises(StageError) as err:
        runner(it, "distill", stage, outputs=outputs, needs=needs)
    msg = str(err.value)
    assert "iter_01/ckpt/model-00001-of-00002.safetensors: content differs" in msg
    assert "cannot be redone: its input iter_00/instruct is gone" in msg and "\n" not in msg
    assert stage.runs == 1


@pytest.mark.slow
@pytest.mark.parametrize("damaged, damage, stage", [
    ("iter_01/pairs.jsonl", truncate, "strip"),
    ("iter_01/instruct/model.safetensors", lambda p: flip_a_byte(p, 4096), "distill"),
])
def test_a_damaged_output_of_a_finished_stage_is_redone_on_resume(reference, tmp_path, damaged, damage, stage):
    run_dir = copy_of(reference, tmp_path)
    damage(run_dir / damaged)
    markers = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.glob("iter_*/*.done")}
    proc = thinkswitch(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert f"[iter_01] {stage}: {damaged}: " in out and "the stage is redone" in out
    redone = {p for p, mtime in markers.items() if (run_dir / p).stat().st_mtime_ns != mtime}
    assert redone == {Path(f"iter_01/{stage}.done")}, "only the damaged stage (its redo is bit-identical here)"
    assert (run_dir / damaged).read_bytes() == (reference / damaged).read_bytes()
    assert same_scores(run_dir, reference), "the resumed run ends with the uninterrupted run's scores"
