"""Bad model directories and run directories fail before any model loads, naming what is wrong."""

import json
import shutil

import pytest
from conftest import compose

from thinkswitch.models import ModelPair, check_pair, is_local
from thinkswitch.paths import RunPaths
from thinkswitch.rundir import check_disk, check_resume, check_writable
from thinkswitch.validate import ConfigError


def fake_checkpoint(path, **config):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64,
                                                  "num_hidden_layers": 2, **config}))
    (path / "model.safetensors").write_bytes(b"0" * 1000)
    (path / "tokenizer.json").write_text("{}")
    return str(path)


def test_a_complete_pair_passes(tmp_path):
    check_pair(ModelPair(fake_checkpoint(tmp_path / "i"), fake_checkpoint(tmp_path / "t")))
    assert not is_local("Qwen/Qwen3-4B-Instruct-2507") and is_local(str(tmp_path))


@pytest.mark.parametrize("remove, match", [
    ("config.json", r"model\.instruct: .* is missing config\.json"),
    ("model.safetensors", r"is missing \*\.safetensors weights"),
    ("tokenizer.json", r"is missing a tokenizer"),
])
def test_incomplete_model_dir(tmp_path, remove, match):
    instruct = fake_checkpoint(tmp_path / "i")
    (tmp_path / "i" / remove).unlink()
    with pytest.raises(ValueError, match=match):
        check_pair(ModelPair(instruct, fake_checkpoint(tmp_path / "t")))


def test_missing_dir_and_mismatched_pair(tmp_path):
    with pytest.raises(ValueError, match=r"model\.instruct: .*nope is not a directory"):
        check_pair(ModelPair(str(tmp_path / "nope"), fake_checkpoint(tmp_path / "t")))
    with pytest.raises(ValueError, match=r"differ in architecture.*hidden_size: 64 vs 128"):
        check_pair(ModelPair(fake_checkpoint(tmp_path / "i"), fake_checkpoint(tmp_path / "t2", hidden_size=128)))


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"run_dir: cannot write to"):
        check_writable(RunPaths(blocker / "run"))


def test_too_little_disk(tmp_path, monkeypatch):
    ckpt = fake_checkpoint(tmp_path / "i")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**6, 10**6 - 10, 10))
    cfg = compose(["iterations=3"])
    with pytest.raises(ConfigError, match=r"has 0\.0 GB free, the run needs about"):
        check_disk(cfg, RunPaths(tmp_path), ckpt, ckpt)


def test_resume_with_only_runtime_keys_changed_is_allowed(tmp_path):
    run = RunPaths(tmp_path)
    assert check_resume(compose(["num_threads=1"]), run) is False
    assert check_resume(compose(["num_threads=2", "iterations=5", "tracking.mode=disabled"]), run) is True
    with pytest.raises(ConfigError, match=r"seed: 0 -> 3"):
        check_resume(compose(["seed=3"]), run)
