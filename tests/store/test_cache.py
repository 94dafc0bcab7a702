"""The stage cache: a sweep over t shares iteration 0's evaluation and iteration 1's generation and
distillation; changing a key that matters invalidates exactly the stages it affects. Trust nothing on disk: an entry
is verified before it is used and never shares a file with a run; a damaged entry is dropped and recomputed, a full
disk or a killed process leaves no entry, a read-only cache is read and never fails a run."""

import errno
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.damage import flip_a_byte, make_outputs, truncate
from tests.support.paths import ROOT
from tests.support.reference import copy_of, same_scores
from tests.support.reference import thinkswitch as resume
from tests.support.runs import reused
from thinkswitch.store import cache as cache_module
from thinkswitch.store.cache import StageCache, digest
from thinkswitch.store.digests import digest_outputs
from thinkswitch.store.io import read_json, read_jsonl

BASELINE = {"iter_00/evaluate_instruct", "iter_00/evaluate_thinking"}  # iteration 0: one stage per checkpoint
SMALL = ["iterations=1", "domain.train_prompts=64", "domain.eval_size=100", "tracking.mode=disabled"]


def thinkswitch(stage_cache, *args):
    return cli.thinkswitch(*args, *SMALL, f"stage_cache={stage_cache}")


@pytest.mark.slow
def test_a_t_sweep_shares_generation_distillation_and_baseline(testbed_pair, tmp_path):
    stages = tmp_path / "stages"
    proc = thinkswitch(stages, "--multirun", "merge.t=0,0.5", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job0, job1 = sorted((tmp_path / "sweep").glob("[01]_*"))
    assert reused(job0) == set()
    # and in iteration 1, the evaluation of the instruct checkpoint (the same in every job): only the merged
    # thinking checkpoint is evaluated again
    assert reused(job1) == {*BASELINE, "iter_01/generate", "iter_01/distill", "iter_01/evaluate_instruct"}
    assert read_jsonl(job0 / "iter_01" / "eval_instruct.jsonl") == read_jsonl(job1 / "iter_01" / "eval_instruct.jsonl")
    assert read_jsonl(job0 / "iter_01" / "generations.jsonl") == read_jsonl(job1 / "iter_01" / "generations.jsonl")
    assert (job1 / "iter_01" / "instruct" / "model.safetensors").read_bytes() == \
        (job0 / "iter_01" / "instruct" / "model.safetensors").read_bytes()
    s0, s1 = read_json(job0 / "summary.json"), read_json(job1 / "summary.json")
    assert s0["final"]["instruct/correct"] == s1["final"]["instruct/correct"]  # same distilled model
    assert s0["baseline"] == s1["baseline"]

    # a relevant key changes: distillation (and what follows) reruns; generation is still shared
    proc = thinkswitch(stages, "merge.t=0.5", "trainer.sft.learning_rate=1e-3", f"hydra.run.dir={tmp_path / 'lr'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert reused(tmp_path / "lr") == {*BASELINE, "iter_01/generate"}

    # and the cache can be turned off
    proc = thinkswitch("null", "merge.t=0.5", f"hydra.run.dir={tmp_path / 'off'}")
    assert proc.returncode == 0 and reused(tmp_path / "off") == set()


def test_store_and_restore_are_atomic_and_first_writer_wins(tmp_path):
    cache = StageCache(tmp_path / "stages")
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "model").mkdir(parents=True)
    (src / "model" / "w.safetensors").write_bytes(b"abc")
    (src / "gen.jsonl").write_text("{}\n")
    key = digest("generate", {"t": 1})
    assert cache.restore(key, ["gen.jsonl"], dst) is None
    cache.store(key, ["gen.jsonl", "model"], src, {"x": 1}, digest_outputs(src, ["gen.jsonl", "model"]))
    (src / "gen.jsonl").write_text('{"other": 1}\n')
    cache.store(key, ["gen.jsonl", "model"], src, {"x": 2}, digest_outputs(src, ["gen.jsonl", "model"]))  # ignored
    dst.mkdir()
    entry = cache.restore(key, ["gen.jsonl", "model"], dst)
    assert entry.metrics == {"x": 1} and set(entry.digests["files"]) == {"gen.jsonl", "model/w.safetensors"}
    assert (dst / "gen.jsonl").read_text() == "{}\n" and (dst / "model" / "w.safetensors").read_bytes() == b"abc"
    assert not list((tmp_path / "stages").glob(".*.tmp")) and not list(dst.glob(".*.tmp"))
    assert digest("generate", {"t": 1}) != digest("generate", {"t": 2})
    assert StageCache(None).restore(key, [], dst) is None


# -- trust nothing on disk: entries are verified before use, never share a file with a run --------------
def stored(tmp_path, key="k1"):
    src = tmp_path / "src"
    names = make_outputs(src)
    cache = StageCache(tmp_path / "stages")
    cache.store(key, names, src, {"m": 1}, digest_outputs(src, names))
    return cache, src, names


def test_cache_and_run_never_share_a_file(tmp_path):
    cache, src, names = stored(tmp_path)
    entry = tmp_path / "stages" / "k1"
    shard = "ckpt/model-00001-of-00002.safetensors"
    assert not (os.stat(entry / shard).st_mode & 0o222), "entry files are read-only"
    dst = tmp_path / "run"
    dst.mkdir()
    assert cache.restore("k1", names, dst).metrics == {"m": 1}
    for rel in (shard, "pairs.jsonl"):
        assert os.stat(dst / rel).st_ino != os.stat(entry / rel).st_ino != os.stat(src / rel).st_ino
        assert os.stat(dst / rel).st_mode & 0o200, "the run's own copy is writable"
    before = (entry / shard).read_bytes()
    flip_a_byte(dst / shard)  # an in-place edit of the run's checkpoint...
    flip_a_byte(src / shard)  # ...and of the run that stored it
    assert (entry / shard).read_bytes() == before, "...never reaches the cache"
    assert cache.restore("k1", names, tmp_path / "src") is not None, "the entry is still intact"


@pytest.mark.parametrize("damage, why", [
    (lambda e: flip_a_byte(e / "ckpt" / "model-00002-of-00002.safetensors"), "content differs"),
    (lambda e: truncate(e / "pairs.jsonl"), "pairs.jsonl: "),
    (lambda e: (e / "ckpt" / "config.json").unlink(), "config.json: missing"),
    (lambda e: (e / "done.json").write_text("{"), "done.json unreadable"),
    (lambda e: (e / "done.json").write_text('{"metrics": {"m": 1}}'), "older version: no digests"),
])
def test_a_damaged_cache_entry_is_dropped_and_recomputed(tmp_path, caplog, damage, why):
    cache, src, names = stored(tmp_path)
    entry = tmp_path / "stages" / "k1"
    for f in entry.rglob("*"):
        f.chmod(0o644)  # as a user (or a bad disk) would, to damage it
    damage(entry)
    dst = tmp_path / "run"
    dst.mkdir()
    with caplog.at_level(logging.WARNING):
        assert cache.restore("k1", names, dst) is None
    assert "stage cache: entry k1 is damaged (" in caplog.text and why in caplog.text
    assert "the stage is recomputed" in caplog.text
    assert not entry.exists() and not list(dst.iterdir()), "dropped; nothing of it reached the run"
    cache.store("k1", names, src, {"m": 2}, digest_outputs(src, names))  # the recomputed stage stores it again
    assert cache.restore("k1", names, dst).metrics == {"m": 2}


def test_a_full_disk_mid_store_leaves_no_entry_and_warns_once(tmp_path, monkeypatch, caplog):
    copies = []

    def copy_then_fail(src, dst):
        if copies:
            raise OSError(errno.ENOSPC, "No space left on device")
        copies.append(src)
        cache_module.shutil.copyfile(src, dst)

    monkeypatch.setattr(cache_module, "copy_file", copy_then_fail)
    with caplog.at_level(logging.WARNING):
        cache, src, names = stored(tmp_path, "k1")
        cache.store("k2", names, src, {"m": 1}, digest_outputs(src, names))
    assert caplog.text.count("stage cache: cannot store") == 1 and "No space left on device" in caplog.text
    assert not (tmp_path / "stages" / "k1").exists() and not list((tmp_path / "stages").iterdir())
    assert cache.restore("k1", names, tmp_path) is None


def test_a_process_killed_mid_store_leaves_no_entry(tmp_path):
    code = f"""
import os, signal, sys
from pathlib import Path
from tests.support.damage import make_outputs
from thinkswitch.store import cache as c
from thinkswitch.store.digests import digest_outputs
src = Path({str(tmp_path / "src")!r}); names = make_outputs(src)
real, n = c.copy_file, []
def copy_then_die(s, d):
    real(s, d); n.append(s)
    if len(n) == 2: os.kill(os.getpid(), signal.SIGKILL)
c.copy_file = copy_then_die
c.StageCache(Path({str(tmp_path / "stages")!r})).store("k1", names, src, {{}}, digest_outputs(src, names))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [p.name for p in (tmp_path / "stages").iterdir()][0].endswith(".tmp"), "only a temporary directory"
    cache = StageCache(tmp_path / "stages")
    assert cache.restore("k1", ["pairs.jsonl", "ckpt"], tmp_path) is None
    src = tmp_path / "src"
    cache.store("k1", ["pairs.jsonl", "ckpt"], src, {"m": 1}, digest_outputs(src, ["pairs.jsonl", "ckpt"]))
    (tmp_path / "dst").mkdir()
    assert cache.restore("k1", ["pairs.jsonl", "ckpt"], tmp_path / "dst").metrics == {"m": 1}


def make_read_only(path: Path):
    """A read-only directory tree, for root too (chattr +i), or skip."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("chattr +i unavailable: cannot make a read-only directory as root")
        return lambda: subprocess.run(["chattr", "-R", "-i", str(path)], check=True)
    subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    return lambda: subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)


@pytest.fixture
def read_only_cache(tmp_path):
    cache, src, names = stored(tmp_path, "old")
    undo = make_read_only(tmp_path / "stages")
    yield cache.root, src, names
    undo()


def test_a_read_only_cache_is_read_warns_once_and_never_fails(read_only_cache, tmp_path, caplog):
    root, src, names = read_only_cache
    cache = StageCache(root)
    with caplog.at_level(logging.WARNING):
        for key in ("k1", "k2", "k3"):
            cache.store(key, names, src, {}, digest_outputs(src, names))
    assert caplog.text.count("cannot store stages in") == 1 and "without storing them" in caplog.text
    dst = tmp_path / "run"
    dst.mkdir()
    assert cache.restore("old", names, dst).metrics == {"m": 1}, "what it holds is still reused"


@pytest.mark.slow
def test_a_read_only_stage_cache_does_not_fail_the_run(reference, tmp_path):
    stages = tmp_path / "stages"
    stages.mkdir()
    undo = make_read_only(stages)
    try:
        run_dir = copy_of(reference, tmp_path, "iter_01/evaluate")
        proc = resume(run_dir, f"stage_cache={stages}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (proc.stdout + proc.stderr).count("stage cache: cannot store stages in") == 1
        assert same_scores(run_dir, reference)
        assert resume(run_dir, f"stage_cache={stages}").returncode == 0, "and a resume with it works"
    finally:
        undo()


@pytest.mark.slow
def test_a_damaged_cache_entry_is_recomputed_by_the_next_job(reference, tmp_path):
    stages = tmp_path / "stages"
    first = copy_of(reference, tmp_path / "a", "iter_01/distill")
    assert resume(first, f"stage_cache={stages}").returncode == 0
    [entry] = [p for p in stages.iterdir() if (p / "instruct").is_dir()]
    shard = entry / "instruct" / "model.safetensors"
    shard.chmod(0o644)
    flip_a_byte(shard, 4096)
    second = copy_of(reference, tmp_path / "b", "iter_01/distill")
    proc = resume(second, f"stage_cache={stages}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert f"stage cache: entry {entry.name} is damaged (instruct/model.safetensors: content differs" in out
    assert "reused from the stage cache" not in out, "recomputed"
    assert read_json(second / "iter_01" / "metrics.json").get("cache/distill") is None
    shard_now = second / "iter_01" / "instruct" / "model.safetensors"
    assert shard_now.read_bytes() == (reference / "iter_01" / "instruct" / "model.safetensors").read_bytes()
    assert same_scores(second, reference)
    assert StageCache(stages).restore(entry.name, ["adapter", "instruct"], tmp_path) is not None, "stored again"
