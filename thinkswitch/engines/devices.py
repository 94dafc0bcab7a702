"""The run's device: `device=auto` claims a free GPU of its own (a lock per GPU), so the jobs of a parallel sweep
each get one; other names pin a device."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from thinkswitch.engines.models import pick_device
from thinkswitch.store.locks import claim_one

log = logging.getLogger(__name__)


def choose_device(name: str, cache_dir: Path, run_dir: str, gpus: Optional[Sequence[str]] = None):
    """The run's torch device, and the lock that makes it this run's (None: not locked).

    `cpu`, `cuda`, `cuda:N` pin (nothing locked: jobs pinned to one GPU share it). `auto`: the CPU where
    there is no GPU; else the first GPU no other thinkswitch process holds (a lock per GPU, by its UUID,
    under `<cache_dir>/devices/`, held until the run ends, released by the kernel if it dies), waiting
    while all are taken. The process then sees that GPU only (CUDA_VISIBLE_DEVICES, set before CUDA starts
    here: the HF Trainer would otherwise spread over every GPU it sees) and uses it as cuda:0.
    `gpus`: the visible GPUs' UUIDs in CUDA's order (default: `gpu_ids()`); a seam for tests.
    """
    import torch

    if name != "auto":
        return pick_device(name), None
    gpus = gpu_ids() if gpus is None else list(gpus)
    if not gpus:
        return torch.device("cpu"), None
    where = Path(cache_dir).expanduser() / "devices"
    try:
        index, lock = claim_one(gpus, where, run=run_dir)
    except OSError as e:
        log.warning("device=auto: cannot lock a GPU in %s (%s); using cuda:0, which other jobs may share",
                    where, e.strerror or e)
        return torch.device("cuda:0"), None
    log.info("device=auto: GPU %d of %d (%s) is this run's, the first free one (locks in %s)",
             index, len(gpus), gpus[index], where)
    if torch.cuda.is_initialized():  # too late to narrow what CUDA sees in this process
        return torch.device(f"cuda:{index}"), lock
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index]
    return torch.device("cuda:0"), lock


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
