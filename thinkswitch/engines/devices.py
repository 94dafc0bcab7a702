"""The run's device: `device=auto` claims a free GPU of its own (a lock per GPU), so the jobs of a parallel sweep
each get one; other names pin a device."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from thinkswitch.engines.gpus import gpu_ids
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
