"""Trust nothing on disk: stage outputs and stage-cache entries are verified before they are used, the
cache never shares a file with a run, one process writes a run directory, a refused resume writes nothing.

The fast tests drive the pieces directly (digests, the stage runner with stand-in stages, the cache, the
lock); the slow ones run `thinkswitch` on the testbed, as a user would, from one finished reference run.
"""

import dataclasses
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support import cli
from tests.support.shared import REFERENCE_ARGS
from thinkswitch.config import Role
from thinkswitch.errors import ConfigError, DataError, RunInUse, StageError
from thinkswitch.store import cache as cache_module
from thinkswitch.store import paths
from thinkswitch.store.cache import StageCache
from thinkswitch.store.digests import check, digest_outputs
from thinkswitch.store.io import read_json, read_jsonl
from thinkswitch.store.paths import IterationPaths, RunPaths
from thinkswitch.store.rundir import RunLock, check_extension
from thinkswitch.store.runner import StageRunner

ROOT = Path(__file__).resolve().parents[1]


def flip_a_byte(path: Path, offset: int = -9) -> None:
    """Change one byte in place (same size, same inode): what a bit flip or a careless edit does."""
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate(path: Path) -> None:
    """Cut the file in the middle of its last line."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


def make_outputs(root: Path) -> list[str]:
    (root / "ckpt").mkdir(parents=True)
    (root / "ckpt" / "model-00001-of-00002.safetensors").write_bytes(os.urandom(3000))
    (root / "ckpt" / "model-00002-of-00002.safetensors").write_bytes(os.urandom(2000))
    (root / "ckpt" / "config.json").write_text('{"a": 1}\n')
    (root / "pairs.jsonl").write_text("".join(json.dumps({"id": i, "completion": "x" * i}) + "\n" for i in range(20)))
    return ["pairs.jsonl", "ckpt"]


# -- digests ----------------------------------------------------------------------------------------
CORRUPTIONS = {
    "truncated line": (lambda r: truncate(r / "pairs.jsonl"), "pairs.jsonl: "),
    "flipped byte in a shard": (lambda r: flip_a_byte(r / "ckpt" / "model-00002-of-00002.safetensors"),
                                "model-00002-of-00002.safetensors: content differs"),
    "missing shard": (lambda r: (r / "ckpt" / "model-00001-of-00002.safetensors").unlink(),
                      "model-00001-of-00002.safetensors: missing"),
    "added file": (lambda r: (r / "ckpt" / "model.safetensors").write_bytes(b"x"),
                   "ckpt/model.safetensors: a file the stage did not write"),
    "rewritten config": (lambda r: (r / "ckpt" / "config.json").write_text('{"a": 2}\n'), "config.json: content"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_digests_catch_every_change_and_name_the_file(tmp_path, corruption):
    root = tmp_path / "iter_01"
    names = make_outputs(root)
    record = digest_outputs(root, names)
    assert len(record["files"]) == 4 and check(root, record, names) is None
    damage, expected = CORRUPTIONS[corruption]
    damage(root)
    problem = check(root, record, names)
    assert problem is not None and expected in problem and problem.startswith("iter_01/"), problem


# -- the stage runner, with stand-in stages ---------------------------------------------------------
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


# -- the stage cache --------------------------------------------------------------------------------
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
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from tests.store.test_trust import make_outputs
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
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
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


# -- one writer per run directory --------------------------------------------------------------------
HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from thinkswitch.store.paths import RunPaths
from thinkswitch.store.rundir import RunLock
with RunLock(RunPaths(Path({run!r}))):
    print("holding", flush=True)
    time.sleep(120)
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), run=str(run_dir))],
                            stdout=subprocess.PIPE, text=True)
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


# -- extending a run, and other inputs --------------------------------------------------------------
def finished_run_files(root: Path, keep: str, iterations: int = 1) -> RunPaths:
    from tests.support.shared import compose

    run = RunPaths(root)
    cfg = compose([f"keep_checkpoints={keep}", f"iterations={iterations}"], run_dir=str(root))
    root.mkdir(parents=True)
    run.run_config.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    for k in range(iterations + 1):
        run.iteration(k).root.mkdir()
        for role in Role:
            run.iteration(k).mark_done(paths.Stage.evaluation(role), {"metrics": {}})
    return run


@pytest.mark.parametrize("case", ["removed by keep_checkpoints=none", "kept by keep_checkpoints=last", "deleted"])
def test_extending_a_run_needs_its_last_checkpoints(tmp_path, case):
    from tests.support.shared import compose

    keep = case.split("=")[1] if "=" in case else "all"
    run = finished_run_files(tmp_path / "run", keep)
    it = run.iteration(1)
    for ckpt, stage in ((it.instruct, "distill"), (it.thinking, "merge")):
        ckpt.mkdir()
        it.mark_done(stage, {"metrics": {}})
        if case.startswith("removed"):
            it.mark_pruned(stage, ckpt.name)
        if not case.startswith("kept"):
            ckpt.rmdir()
    cfg = compose([f"keep_checkpoints={keep}", "iterations=2"], run_dir=str(run.root))
    if case.startswith("kept"):
        check_extension(cfg, run)  # iteration 2 has what it needs
        return
    with pytest.raises(ConfigError) as err:
        check_extension(cfg, run)
    msg = str(err.value)
    assert "iteration 2 starts from iter_01's checkpoints" in msg and "cannot be extended" in msg
    assert str(it.instruct) in msg and str(it.thinking) in msg and "Start a new run directory with iterations=2" in msg
    assert ("keep_checkpoints removed them" if case.startswith("removed") else "they were deleted") in msg


def test_a_truncated_jsonl_line_is_a_data_error_naming_the_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    truncate(path)
    with pytest.raises(DataError, match=r"pairs.jsonl:2: not valid JSON"):
        read_jsonl(path)


# -- as a user runs it: `thinkswitch` on the testbed, from one finished run --------------------------
# conftest.reference_run's: the tests work on copies of it, without W&B (a key a resume may change)
SMALL = [a if not a.startswith("tracking.mode=") else "tracking.mode=disabled" for a in REFERENCE_ARGS]


def thinkswitch(run_dir, *extra) -> subprocess.CompletedProcess:
    return cli.thinkswitch(*SMALL, *extra, run_dir=run_dir)


def console(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def snapshot(run_dir: Path) -> dict:
    """Every file of a run directory: its size, modification time and SHA-256."""
    import hashlib

    return {p.relative_to(run_dir).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns,
                                                  hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(reference_run):
    """One uninterrupted run (shared with the loop and resume tests); each test works on a copy of it."""
    return reference_run


def copy_of(reference: Path, tmp_path: Path, *unfinish: str) -> Path:
    """A copy of the reference run, with the markers `unfinish` (e.g. `iter_01/distill`) removed."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    for stage in unfinish:
        (run_dir / f"{stage}.done").unlink()
    return run_dir


def same_scores(run_dir: Path, reference: Path) -> bool:
    a, b = read_json(run_dir / "summary.json"), read_json(reference / "summary.json")
    return a["final"] == b["final"] and a["baseline"] == b["baseline"]


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


@pytest.mark.slow
def test_a_refused_resume_leaves_the_run_directory_byte_identical(reference, tmp_path):
    run_dir = copy_of(reference, tmp_path)
    before = snapshot(run_dir)
    proc = thinkswitch(run_dir, "merge.t=0.5")
    assert proc.returncode == 2
    lines = console(proc)
    assert len(lines) == 1 and "merge.t: 0.1 -> 0.5" in lines[0], lines
    assert snapshot(run_dir) == before, "not a byte, name or mtime changed"
    assert yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) == \
        yaml.safe_load((reference / ".hydra" / "overrides.yaml").read_text())


@pytest.mark.slow
def test_extending_a_keep_checkpoints_none_run_is_refused_up_front(reference, tmp_path):
    run_dir = copy_of(reference, tmp_path)
    proc = thinkswitch(run_dir, "keep_checkpoints=none")  # the run ends (again): its checkpoints go
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (run_dir / "iter_01" / "instruct").exists() and not (run_dir / "iter_01" / "thinking").exists()
    assert read_json(run_dir / "iter_01" / "distill.done")["pruned"] == ["instruct"]
    assert thinkswitch(run_dir, "keep_checkpoints=none").returncode == 0, "a removed checkpoint is no damage"
    before = snapshot(run_dir)
    t0 = time.perf_counter()
    proc = thinkswitch(run_dir, "keep_checkpoints=none", "iterations=2")
    assert proc.returncode == 2 and time.perf_counter() - t0 < 60
    lines = console(proc)
    assert len(lines) == 1 and "keep_checkpoints removed them when the run ended" in lines[0], lines
    assert "cannot be extended" in lines[0] and "Start a new run directory with iterations=2" in lines[0]
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_a_read_only_stage_cache_does_not_fail_the_run(reference, tmp_path):
    stages = tmp_path / "stages"
    stages.mkdir()
    undo = make_read_only(stages)
    try:
        run_dir = copy_of(reference, tmp_path, "iter_01/evaluate_instruct", "iter_01/evaluate_thinking")
        proc = thinkswitch(run_dir, f"stage_cache={stages}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (proc.stdout + proc.stderr).count("stage cache: cannot store stages in") == 1
        assert same_scores(run_dir, reference)
        assert thinkswitch(run_dir, f"stage_cache={stages}").returncode == 0, "and a resume with it works"
    finally:
        undo()


@pytest.mark.slow
def test_a_damaged_cache_entry_is_recomputed_by_the_next_job(reference, tmp_path):
    stages = tmp_path / "stages"
    first = copy_of(reference, tmp_path / "a", "iter_01/distill")
    assert thinkswitch(first, f"stage_cache={stages}").returncode == 0
    [entry] = [p for p in stages.iterdir() if (p / "instruct").is_dir()]
    shard = entry / "instruct" / "model.safetensors"
    shard.chmod(0o644)
    flip_a_byte(shard, 4096)
    second = copy_of(reference, tmp_path / "b", "iter_01/distill")
    proc = thinkswitch(second, f"stage_cache={stages}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert f"stage cache: entry {entry.name} is damaged (instruct/model.safetensors: content differs" in out
    assert "distill: reused from the stage cache" not in out, "recomputed"
    assert read_json(second / "iter_01" / "metrics.json").get("cache/distill") is None
    shard_now = second / "iter_01" / "instruct" / "model.safetensors"
    assert shard_now.read_bytes() == (reference / "iter_01" / "instruct" / "model.safetensors").read_bytes()
    assert same_scores(second, reference)
    assert StageCache(stages).restore(entry.name, ["adapter", "instruct"], tmp_path) is not None, "stored again"


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
