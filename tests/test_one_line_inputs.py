"""Inputs refused in one line before anything loads: per-filter `merge.t` filters that match no tensor (with the
closest name), `distill.merge_device` where it cannot apply; and the failures of `thinkswitch-report` and of the
run directory itself (a file in its place, a read-only filesystem) as one line, not a traceback."""

import shutil
import subprocess

import pytest

from tests.support import cli
from tests.support.shared import compose
from thinkswitch.stages.merge import check_filters
from thinkswitch.validate import check_config

PER_FILTER = "merge.t=[{filter: self_atn, value: 0.5}, {filter: mlp, value: 0.2}, {value: 0.1}]"


def test_a_per_filter_t_whose_filter_matches_no_tensor_is_named_with_the_closest(testbed_pair):
    cfg = compose([PER_FILTER])
    assert check_filters(cfg.merge, testbed_pair.thinking) == [
        f"merge.t[0].filter: 'self_atn' matches no tensor of {testbed_pair.thinking}; did you mean 'self_attn'?"]
    fixed = compose(["merge.t=[{filter: self_attn, value: 0.5}, {filter: mlp, value: 0.2}, {value: 0.1}]"])
    assert check_filters(fixed.merge, testbed_pair.thinking) == []


@pytest.mark.parametrize("overrides,message", [
    (["distill.merge_device=cuda"], "distill.merge_device=cuda: applies after QLoRA only (trainer.quantize_4bit); "
                                    "trainer=lora merges the adapter in place"),
    (["distill.merge_device=cpu"], "distill.merge_device=cpu: applies after QLoRA only"),
    (["distill.merge_device=cuda", "trainer=qlora", "device=cpu"], "distill.merge_device=cuda: the run's device "
                                                                    "is cpu (device=cpu)"),
])
def test_merge_device_is_refused_wherever_it_cannot_apply(overrides, message):
    with pytest.raises(Exception, match="distill.merge_device") as e:
        check_config(compose(overrides))
    assert message in str(e.value)
    check_config(compose(["distill.merge_device=cpu", "trainer=qlora"]))  # where it applies: accepted


def one_line(proc: subprocess.CompletedProcess) -> str:
    out = (proc.stdout + proc.stderr).strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out[-3000:]
    return out


def test_a_bad_filter_stops_the_run_in_one_line_before_a_model_loads(testbed_pair, tmp_path):
    proc = cli.thinkswitch(PER_FILTER, "tracking.mode=disabled", run_dir=tmp_path / "run")
    assert proc.returncode == 2
    assert "merge.t[0].filter: 'self_atn' matches no tensor" in proc.stdout + proc.stderr
    assert "did you mean 'self_attn'?" in proc.stdout + proc.stderr


def test_a_run_directory_that_is_a_file_or_under_one_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    for run_dir, what in ((tmp_path / "afile", "exists and is not a directory"),
                          (tmp_path / "afile" / "run", "is under a file, not a directory")):
        proc = cli.thinkswitch("tracking.mode=disabled", run_dir=run_dir)
        assert proc.returncode == 2
        assert one_line(proc) == f"error: run_dir: {run_dir} {what}; choose another with hydra.run.dir=..."


@pytest.fixture
def read_only_dir(tmp_path):
    path = tmp_path / "ro"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M,ro", "tmpfs", str(path)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_a_run_directory_on_a_read_only_filesystem_is_one_line(read_only_dir):
    proc = cli.thinkswitch("tracking.mode=disabled", run_dir=read_only_dir / "run")
    assert proc.returncode == 2
    assert one_line(proc) == (f"error: run_dir: {read_only_dir / 'run'} cannot be written (Read-only file system); "
                              f"choose another with hydra.run.dir=...")


@pytest.mark.slow
def test_the_reports_failures_are_one_line(reference_run, tmp_path, read_only_dir):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    proc = cli.python("-m", "thinkswitch.analysis.report", run, "--out", read_only_dir / "report")
    assert proc.returncode == 1
    assert "cannot write the report to" in one_line(proc) and "Read-only file system" in proc.stderr
    metrics = run / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-40])  # torn: its last line cut off
    proc = cli.python("-m", "thinkswitch.analysis.report", run)
    assert proc.returncode == 2
    assert "metrics.jsonl" in one_line(proc)
