"""Distillation resumes from TRL's last checkpoint: SIGKILLed after a checkpoint, then run again, it trains only the
remaining steps and ends with an uninterrupted run's adapter."""

import signal

import pytest
import torch
from safetensors.torch import load_file

from tests.support import cli
from tests.support.faulty_distill import KILL_AT, SAVE_STEPS, STEPS, run_distill
from thinkswitch.stages.distill import CHECKPOINTS, last_checkpoint
from thinkswitch.store.io import write_json


@pytest.mark.slow
def test_killed_after_a_checkpoint_then_rerun_resumes_and_matches(testbed_pair, tmp_path):
    reference = run_distill(tmp_path / "reference")
    assert reference["train/steps"] == STEPS and reference["train/resumed_from_step"] == 0
    assert not (tmp_path / "reference" / CHECKPOINTS).exists(), "checkpoints are deleted with the adapter saved"

    root = tmp_path / "run"
    proc = cli.python("-m", "tests.support.faulty_distill", root, KILL_AT, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (root / "adapter").exists()
    assert sorted(p.name for p in (root / CHECKPOINTS).glob("checkpoint-*")) == [f"checkpoint-{SAVE_STEPS}"]

    resumed = run_distill(root)
    assert resumed["train/resumed_from_step"] == SAVE_STEPS and resumed["train/steps"] == STEPS
    assert not (root / CHECKPOINTS).exists()
    ref, got = (load_file(p / "adapter" / "adapter_model.safetensors") for p in (tmp_path / "reference", root))
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "the resumed adapter is the uninterrupted one"
    ref_w, got_w = (load_file(p / "instruct" / "model.safetensors") for p in (tmp_path / "reference", root))
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)


def test_last_checkpoint_is_the_newest_complete_one_of_the_same_inputs(tmp_path):
    work = tmp_path / CHECKPOINTS
    assert last_checkpoint(work, "k1") is None and (work / "key.json").exists()  # a fresh start records its key
    for step in (3, 6, 9):
        (work / f"checkpoint-{step}").mkdir()
    for step in (3, 6):
        write_json(work / f"checkpoint-{step}" / "trainer_state.json", {"global_step": step})
    (work / "checkpoint-9" / "trainer_state.json").write_text('{"global_st')  # killed while writing it
    assert last_checkpoint(work, "k1") == work / "checkpoint-6"
    assert last_checkpoint(work, "k2") is None, "checkpoints trained from other inputs are never resumed"
    assert not list(work.glob("checkpoint-*")) and last_checkpoint(work, "k1") is None
