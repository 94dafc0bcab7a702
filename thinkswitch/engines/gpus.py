"""The GPUs this process may use, counted without starting CUDA in it (a child process asks), so that
`engines.devices.choose_device` can still narrow CUDA_VISIBLE_DEVICES afterwards."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

GPU_UUIDS = ("import torch\n"
             "for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):\n"
             "    print(torch.cuda.get_device_properties(i).uuid)")
_LISTED: dict[Optional[str], list[str]] = {}  # gpu_ids() by CUDA_VISIBLE_DEVICES: one child process each


def gpu_ids() -> list[str]:
    """The GPUs this process may use, in CUDA's order, by UUID (`GPU-<uuid>`: the same GPU whatever
    CUDA_VISIBLE_DEVICES calls it, on any host); [] without CUDA. Asked of a child process, so that CUDA
    does not start here before `choose_device` has set CUDA_VISIBLE_DEVICES (once per CUDA_VISIBLE_DEVICES
    value in a process). Where torch is a CUDA build and an NVIDIA driver is present but CUDA cannot start
    (a driver older than the wheel's CUDA, ...), says so: the run would otherwise go to the CPU unannounced."""
    import torch

    if torch.version.cuda is None:  # a CPU build of torch
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible not in _LISTED:
        _LISTED[visible] = _list_gpus(torch.__version__, torch.version.cuda)
    return list(_LISTED[visible])


def _list_gpus(torch_version: str, cuda_version: str) -> list[str]:
    try:
        out = subprocess.run([sys.executable, "-c", GPU_UUIDS], capture_output=True, text=True, timeout=300,
                             check=True)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("device=auto: could not list the GPUs (%s); each job may use any of them", e)
        return []
    ids = [u if u.startswith("GPU-") else f"GPU-{u}" for u in out.stdout.split()]
    if not ids and driver_present():
        said = [line for line in out.stderr.splitlines() if "CUDA" in line or "driver" in line.lower()]
        log.warning("CUDA cannot start here although an NVIDIA driver is present (torch %s, built for CUDA %s%s): "
                    "device=auto runs on the CPU; `make gpu-check` says more", torch_version, cuda_version,
                    f": {said[-1].strip()}" if said else "")
    return ids


def driver_present() -> bool:
    """An NVIDIA kernel driver is loaded (its /proc entry), whatever CUDA makes of it."""
    return Path("/proc/driver/nvidia/version").exists()


def cuda_count() -> int:
    """How many GPUs CUDA would give this process, without starting CUDA here (`gpu_ids`): validation asks this,
    so that CUDA_VISIBLE_DEVICES set by `choose_device` afterwards still takes effect."""
    return len(gpu_ids())
