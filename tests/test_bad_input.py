"""Bad model directories and run directories fail before any model loads, naming what is wrong."""

import json
import shutil

import pytest

from tests.support.checkpoints import fake_checkpoint, sharded_checkpoint, write_safetensors
from tests.support.shared import compose
from thinkswitch.engines.models import ModelPair, check_model_dir, check_pair, is_local
from thinkswitch.store.paths import RunPaths
from thinkswitch.store.rundir import check_disk, check_resume, check_writable, record_config
from thinkswitch.validate import ConfigError


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


def test_the_header_check_accepts_what_safetensors_writes(tmp_path):
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    tensors = {"a": np.zeros((3, 5), np.float16), "b": np.ones(7, np.int64), "c": np.zeros((2, 0, 4), np.float32)}
    fake_checkpoint(tmp_path / "i")
    save_file(tensors, str(tmp_path / "i" / "model.safetensors"), metadata={"format": "pt"})
    assert check_model_dir(str(tmp_path / "i"), "model.instruct") == {"a": (3, 5), "b": (7,), "c": (2, 0, 4)}
    assert check_model_dir(sharded_checkpoint(tmp_path / "s"), "model.thinking") == {
        "embed.weight": (16, 8), "layer.0.weight": (8, 8)}


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def _rewrite_header(path, edit):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


@pytest.mark.parametrize("corrupt, match", [
    (lambda f: _truncate(f, len(f.read_bytes()) - 10),
     r"truncated: its header describes 768 bytes of tensors, the file holds 758$"),
    (lambda f: f.write_bytes(f.read_bytes() + b"junk"),
     r"corrupt: its header describes 768 bytes of tensors, the file holds 772$"),
    (lambda f: _truncate(f, 5), r"not a safetensors file, or truncated \(5 bytes"),
    (lambda f: _truncate(f, 40), r"not a safetensors file, or truncated \(40 bytes; its header"),
    (lambda f: f.write_bytes(b"0" * 1000), r"not a safetensors file, or truncated"),
    (lambda f: f.write_bytes((4).to_bytes(8, "little") + b"{no}"), r"corrupt safetensors header \(not valid JSON\)"),
    (lambda f: _rewrite_header(f, lambda h: h["layer.0.weight"].update(shape=[8, 9])),
     r"corrupt safetensors header: tensor 'layer\.0\.weight' \(F32 \[8, 9\]\) spans 256 bytes, its shape needs 288"),
    (lambda f: _rewrite_header(f, lambda h: h["embed.weight"].pop("data_offsets")),
     r"corrupt safetensors header at tensor 'embed\.weight'"),
])
def test_corrupt_safetensors_names_the_file(tmp_path, corrupt, match):
    instruct = fake_checkpoint(tmp_path / "i")
    corrupt(tmp_path / "i" / "model.safetensors")
    with pytest.raises(ConfigError, match=r"^model\.instruct: \S+/i/model\.safetensors: " + match):
        check_pair(ModelPair(instruct, fake_checkpoint(tmp_path / "t")))


@pytest.mark.parametrize("edit, match", [
    (lambda d: (d / "model-00002-of-00002.safetensors").unlink(),
     r"model\.safetensors\.index\.json maps 'layer\.0\.weight' to model-00002-of-00002\.safetensors, which is "
     r"missing from"),
    (lambda d: write_safetensors(d / "model-00002-of-00002.safetensors", {"other": [2]}),
     r"model\.safetensors\.index\.json maps 'layer\.0\.weight' to model-00002-of-00002\.safetensors, which has "
     r"no such tensor"),
    (lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": '),
     r"model\.safetensors\.index\.json: not valid JSON"),
    (lambda d: (d / "model.safetensors.index.json").write_text('{"metadata": {}}'),
     r"model\.safetensors\.index\.json: no `weight_map` object"),
    (lambda d: _truncate(d / "model-00001-of-00002.safetensors", -4),
     r"model-00001-of-00002\.safetensors: truncated: its header describes 512 bytes of tensors, the file holds 508"),
])
def test_sharded_checkpoint_with_a_bad_index_or_shard(tmp_path, edit, match):
    thinking = sharded_checkpoint(tmp_path / "t")
    edit(tmp_path / "t")
    with pytest.raises(ConfigError, match=r"^model\.thinking: \S+/t/" + match):
        check_pair(ModelPair(fake_checkpoint(tmp_path / "i"), thinking))


@pytest.mark.parametrize("key, a, b", [
    ("head_dim", 16, 32),
    ("num_key_value_heads", 2, 4),
    ("tie_word_embeddings", True, False),
    ("vocab_size", 100, 101),
])
def test_a_pair_differing_in_a_shape_key_names_it(tmp_path, key, a, b):
    pair = ModelPair(fake_checkpoint(tmp_path / "i", **{key: a}), fake_checkpoint(tmp_path / "t", **{key: b}))
    with pytest.raises(ConfigError, match=rf"differ in architecture .*: {key}: {a} vs {b}$"):
        check_pair(pair)


def test_head_dim_left_out_is_hidden_size_over_heads(tmp_path):
    check_pair(ModelPair(fake_checkpoint(tmp_path / "i", head_dim=16), fake_checkpoint(tmp_path / "t")))
    with pytest.raises(ConfigError, match=r"head_dim: 32 vs 16"):
        check_pair(ModelPair(fake_checkpoint(tmp_path / "i2", head_dim=32), fake_checkpoint(tmp_path / "t2")))


def test_a_pair_with_different_tensors_names_them(tmp_path):
    other = {"embed.weight": [16, 8], "layer.0.weight": [8, 4], "extra": [3]}
    pair = ModelPair(fake_checkpoint(tmp_path / "i"), fake_checkpoint(tmp_path / "t", tensors=other))
    with pytest.raises(ConfigError, match=r"hold different tensors .*: extra: absent vs \[3\]; "
                                          r"layer\.0\.weight: \[8, 8\] vs \[8, 4\]$"):
        check_pair(pair)


def test_a_corrupt_config_json_names_the_file(tmp_path):
    instruct = fake_checkpoint(tmp_path / "i")
    (tmp_path / "i" / "config.json").write_text('{"hidden_size": ')
    with pytest.raises(ConfigError, match=r"^model\.instruct: \S+/i/config\.json: not valid JSON"):
        check_pair(ModelPair(instruct, fake_checkpoint(tmp_path / "t")))


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
    assert not list(tmp_path.iterdir()), "the check only reads"
    record_config(compose(["num_threads=1"]), run)  # the run started
    assert check_resume(compose(["num_threads=2", "iterations=5", "tracking.mode=disabled"]), run) is True
    with pytest.raises(ConfigError, match=r"seed: 0 -> 3"):
        check_resume(compose(["seed=3"]), run)


def test_gold_oracle_without_training_answers_stops_at_setup(tmp_path):
    """pubmedqa_local's training prompts carry no answer: the oracle cannot filter their labels, said in one line
    before any label is generated."""
    from tests.support import cli
    from tests.support.paths import SHARED_DATA

    proc = cli.thinkswitch("method=gold_oracle", "domain=pubmedqa_local", f"data_dir={SHARED_DATA}",
                           "tracking.mode=disabled", run_dir=tmp_path / "run", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "method=gold_oracle needs answers for the training prompts; map `answer` in domain.train.fields" in out
    assert "Traceback" not in out and not (tmp_path / "run" / "iter_01").exists()
