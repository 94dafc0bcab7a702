"""`python -m benchmarks.gpu_check` (or `python benchmarks/gpu_check.py`, from anywhere) on a machine without CUDA:
one line, no traceback (issue 26, finding 7)."""

import subprocess
import sys

import pytest
import torch

from tests.support.paths import ROOT


@pytest.mark.skipif(torch.version.cuda is not None, reason="a CUDA build of torch: the GPU case")
@pytest.mark.parametrize("how", ["module", "path"])
def test_gpu_check_without_cuda_ends_in_one_line(tmp_path, how):
    command = ["-m", "benchmarks.gpu_check"] if how == "module" else [str(ROOT / "benchmarks" / "gpu_check.py")]
    proc = subprocess.run([sys.executable, *command, "--out", str(tmp_path / "o")],
                          cwd=ROOT if how == "module" else tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device here") and "Traceback" not in proc.stderr
    assert "make install-cuda" in lines[0]
