"""Validation counts GPUs without starting CUDA in the process (issue 26, finding 5): `device=auto` then narrows
CUDA_VISIBLE_DEVICES to the GPU it claims before CUDA starts, so the trainer sees one GPU. The seam is a fake device
list (`engines.gpus.gpu_ids`); torch's CUDA entry points are made to fail loudly if validation calls them."""

from __future__ import annotations

import pytest
import torch

from tests.support.shared import compose
from thinkswitch.engines import gpus as devices
from thinkswitch.errors import ConfigError


@pytest.fixture
def two_gpus(monkeypatch):
    def starts_cuda(name):
        def called(*a, **k):
            raise AssertionError(f"validation called torch.cuda.{name}: CUDA started in the main process")
        return called

    import peft  # noqa: F401  (imported first: bitsandbytes asks torch.cuda.is_available() on import, see below)

    for name in ("is_available", "device_count", "set_device", "init", "is_bf16_supported", "mem_get_info"):
        monkeypatch.setattr(torch.cuda, name, starts_cuda(name))
    monkeypatch.setattr(devices, "gpu_ids", lambda: ["GPU-aaaa", "GPU-bbbb"])


def test_validation_of_a_distilling_run_never_starts_cuda(two_gpus):
    from thinkswitch.validate import check_config

    check_config(compose(["device=auto"]))  # the default preset: distillation's SFTConfig built, the device read
    check_config(compose(["device=cuda:1"]))
    with pytest.raises(ConfigError, match=r"device: cuda:2 asked for, but there are 2 CUDA device\(s\)"):
        check_config(compose(["device=cuda:2"]))


def test_a_cuda_build_that_cannot_start_cuda_says_so(monkeypatch, caplog):
    monkeypatch.setattr(devices, "driver_present", lambda: True)
    monkeypatch.setattr(devices, "GPU_UUIDS", "import sys; sys.stderr.write('UserWarning: CUDA initialization: "
                                              "The NVIDIA driver on your system is too old\\n')")
    assert devices._list_gpus("2.13.0", "12.8") == []
    assert "CUDA cannot start here although an NVIDIA driver is present" in caplog.text
    assert "driver on your system is too old" in caplog.text and "runs on the CPU" in caplog.text


def test_libraries_asking_for_cuda_on_import_do_not_start_it(monkeypatch):
    """bitsandbytes calls `torch.cuda.is_available()` when imported; with thinkswitch imported, torch answers from
    NVML (PYTORCH_NVML_BASED_CUDA_CHECK) and the CUDA runtime is not asked: torch's own rule, on a faked CUDA build."""
    import os

    import thinkswitch  # noqa: F401

    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"

    def runtime_asked():
        raise AssertionError("cudaGetDeviceCount: the CUDA runtime started")

    monkeypatch.setattr(torch.cuda, "_is_compiled", lambda: True)
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: 2)
    monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", runtime_asked, raising=False)
    assert torch.cuda.is_available() and torch.cuda.device_count() == 2
