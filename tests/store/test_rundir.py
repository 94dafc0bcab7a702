"""The run directory: extending a run needs its last checkpoints (refused up front, naming them, when they are gone), a
refused resume leaves the directory byte-identical, a truncated JSON line is a data error naming the line."""

import dataclasses
import time
from pathlib import Path

import pytest
import yaml

from tests.support.damage import truncate
from tests.support.reference import console, copy_of, snapshot, thinkswitch
from thinkswitch.config import Role
from thinkswitch.errors import ConfigError, DataError
from thinkswitch.store import paths
from thinkswitch.store.io import read_json, read_jsonl
from thinkswitch.store.paths import RunPaths
from thinkswitch.store.rundir import check_extension


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
