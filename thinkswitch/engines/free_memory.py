"""Free memory on a device now: what the memory plans start from (measured before a model loads), and what `cb`
sizes its paged cache from (measured after)."""

from __future__ import annotations

from pathlib import Path
from typing import Union


def meminfo_available(path: Union[str, Path] = "/proc/meminfo") -> int:
    """`MemAvailable` of /proc/meminfo, in bytes: what a process can allocate without swapping."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"{path}: no MemAvailable line")


def free_memory(device: str) -> int:
    """Free bytes on a device now: CUDA's free memory (`torch.cuda.mem_get_info`), or on a CPU the available
    RAM (`MemAvailable`; psutil's `available` where there is no /proc/meminfo), CUDA's cached blocks released
    first. The start-up plans measure it before the model loads (they subtract the weights)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()  # the allocator's cached blocks are free to a new engine (transformers measures so)
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if Path("/proc/meminfo").is_file():
        return meminfo_available()
    import psutil  # not Linux (a dependency of accelerate)

    return int(psutil.virtual_memory().available)
