"""The last failures that printed tracebacks or said too little (issue 19): a full disk, a noisy library
warning, a pair with custom code, an empty or incomplete data file, a refused start that touched the run."""

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from tests.support.paths import SHARED_DATA
from tests.support.shared import compose
from thinkswitch.errors import ConfigError, DataError, DiskFull
from thinkswitch.store import io

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- a full disk: one line naming the path and the space needed ------------------------------------------
def test_a_full_disk_in_an_atomic_write_names_the_path_and_the_size(tmp_path, monkeypatch):
    def full(self, data):
        raise ENOSPC

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFull) as err:
        io.write_json(tmp_path / "iter_01" / "metrics.json", {"accuracy": 0.5})
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'iter_01' / 'metrics.json'}: No space left on device (")
    assert "this write needs 22 bytes" in msg and "\n" not in msg and "Errno" not in msg
    assert isinstance(err.value, OSError) and err.value.exit_code == 1
    assert not [p for p in (tmp_path / "iter_01").iterdir()], "nothing half-written is left"


def test_a_full_disk_while_a_library_writes_a_checkpoint_says_how_much_it_wrote(tmp_path):
    """A library (safetensors, torch) wraps ENOSPC in its own error type; its text still says so."""
    with pytest.raises(DiskFull, match=r"instruct: No space left on device \(.* free; this write needs more "
                                       r"than the 1\.0 KB it wrote\)"):
        with io.atomic_path(tmp_path / "instruct") as tmp:
            tmp.mkdir()
            (tmp / "model-00001.safetensors").write_bytes(b"x" * 1000)
            raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                               "\"No space left on device\" })")
    assert not (tmp_path / "instruct").exists() and not list(tmp_path.iterdir())


def test_the_cli_turns_a_stray_disk_full_error_into_one_line(tmp_path):
    from thinkswitch.cli import known_error

    error = known_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.safetensors")), "/r")
    assert isinstance(error, DiskFull) and str(error).startswith(f"{tmp_path / 'x.safetensors'}: No space left")
    with pytest.raises(KeyError):  # anything else keeps its traceback
        known_error(KeyError("a bug"), "/r")


def test_a_full_disk_under_the_log_file_is_not_a_logging_error_block(tmp_path, capsys):
    from thinkswitch.cli import _skip_disk_full

    class FullStream:
        def write(self, text):
            raise ENOSPC

        def flush(self):
            pass

    handler = logging.FileHandler(tmp_path / "thinkswitch.log", delay=True)
    handler.stream = FullStream()
    handler.handleError = _skip_disk_full(handler.handleError)
    logger = logging.getLogger("thinkswitch.test_failures")
    logger.addHandler(handler)
    try:
        logger.error("the disk is full")
        assert "Logging error" not in capsys.readouterr().err
        handler.stream.write = lambda text: 1 / 0  # any other failure is still reported
        logger.error("a bug in a handler")
        assert "--- Logging error ---" in capsys.readouterr().err
    finally:
        logger.removeHandler(handler)


# -- libraries ---------------------------------------------------------------------------------------------
def test_only_bitsandbytes_kernels_warning_is_silenced(caplog):
    from thinkswitch.cli import _quiet_bitsandbytes

    _quiet_bitsandbytes()
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        bnb.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                    "already `pip install kernels` and the kernels >= 0.11.1", "No module named 'kernels'")
        bnb.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


def test_a_pair_with_auto_map_is_said_once(tmp_path, caplog):
    from tests.support.checkpoints import fake_checkpoint
    from thinkswitch.engines.models import ModelPair, check_pair

    auto_map = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    pair = ModelPair(fake_checkpoint(tmp_path / "i", auto_map=auto_map),
                     fake_checkpoint(tmp_path / "t", auto_map=auto_map))
    with caplog.at_level(logging.WARNING):
        check_pair(pair)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "auto_map" in warnings[0]
    assert f"{tmp_path / 'i'}/config.json" in warnings[0] and f"{tmp_path / 't'}/config.json" in warnings[0]
    caplog.clear()
    check_pair(ModelPair(fake_checkpoint(tmp_path / "i2"), fake_checkpoint(tmp_path / "t2")))
    assert "auto_map" not in caplog.text


# -- data files ----------------------------------------------------------------------------------------------
def _aime_dir(tmp_path: Path, eval_lines: list[str]) -> Path:
    data = tmp_path / "data"
    (data / "aime").mkdir(parents=True)
    for name in ("aime24.jsonl", "aime25.jsonl"):
        shutil.copy(SHARED_DATA / "aime" / name, data / "aime" / name)
    (data / "aime" / "aime26.jsonl").write_text("".join(eval_lines))
    return data


def _load(data: Path):
    from thinkswitch.data.domains import load_domain

    cfg = compose(["domain=aime_local", f"data_dir={data}", "domain.eval_size=5"])
    return load_domain(cfg.domain, cfg.model)


def test_an_empty_eval_file_is_named(tmp_path):
    data = _aime_dir(tmp_path, [])
    with pytest.raises(DataError, match=rf"domain\.eval\.files: {data}/aime/aime26\.jsonl holds no records"):
        _load(data)


def test_a_missing_field_names_the_line_counting_from_one(tmp_path):
    rows = [json.loads(line) for line in (SHARED_DATA / "aime" / "aime25.jsonl").read_text().splitlines()[:10]]
    del rows[6]["answer"]  # the 7th line
    data = _aime_dir(tmp_path, [json.dumps(r) + "\n" for r in rows])
    with pytest.raises(DataError, match=rf"{data}/aime/aime26\.jsonl:7 has no field 'answer'"):
        _load(data)


# -- a refused start changes nothing in the run directory, its mtime included ---------------------------------
def test_a_refused_resume_leaves_the_run_directory_mtime_alone(tmp_path):
    from thinkswitch.loop import run_experiment
    from thinkswitch.store.paths import RunPaths
    from thinkswitch.store.rundir import record_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record_config(compose(["merge.t=0.3"], run_dir=str(run_dir)), RunPaths(run_dir))
    os.utime(run_dir, ns=(1_000_000_000, 1_000_000_000))
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ConfigError, match=r"was started with another config.*merge\.t: 0\.3 -> 0\.5"):
        run_experiment(compose(["merge.t=0.5", "tracking.mode=disabled"], run_dir=str(run_dir)))
    assert os.stat(run_dir).st_mtime_ns == 1_000_000_000 and sorted(p.name for p in run_dir.iterdir()) == before


# -- a real full disk, end to end (needs permission to mount a tmpfs: root in a container) -------------------
@pytest.fixture
def small_disk(tmp_path):
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7M", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_is_one_line_and_the_rerun_finishes(testbed_pair, small_disk):
    from tests.support import cli

    args = ["iterations=1", "domain.train_prompts=16", "domain.eval_size=16", "trainer.sft.num_train_epochs=1",
            "tracking.mode=disabled", "stage_cache=null"]
    run_dir, filler = small_disk / "run", small_disk / "filler"
    proc = cli.start(*args, run_dir=run_dir)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "[iter_01] distill" in line and not filler.exists():  # the disk fills while distillation writes
            with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
                while True:
                    f.write(bytes(1 << 16))
    assert proc.wait(timeout=600) == 1
    out = "".join(lines)
    assert "Traceback" not in out and "Logging error" not in out
    errors = [line for line in lines if "error: " in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(run_dir) in errors[0]
    assert f"rerun with hydra.run.dir={run_dir}" in errors[0]
    filler.unlink()
    again = cli.thinkswitch(*args, run_dir=run_dir, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "summary.json").exists() and (run_dir / "iter_00" / "evaluate_thinking.done").exists()
