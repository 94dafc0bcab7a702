"""The run's device: `device=auto` claims a free GPU of its own (a lock per GPU), so the jobs of a parallel sweep
each get one; other names pin a device."""

from __future__ import annotations

import logging
import os
import shutil
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


def triton_build_error(device, use_triton: Optional[bool] = None, environ: Optional[dict] = None,
                       which=shutil.which, python_include: Optional[Path] = None) -> Optional[str]:
    """Why TRL's Triton kernels, which distillation runs on CUDA, could not be built here (None: nothing to build, or
    it can be). Triton compiles each kernel's launcher with a C compiler against Python's headers, found as
    `triton.runtime.build._build` finds them: `$CC`, else gcc, else clang; `<sysconfig include>/Python.h`. Without
    them the first training step fails, hours into a run. `use_triton`: TRL's own switch (`_use_triton`) unless
    given; `environ`, `which`, `python_include`: seams for tests."""
    if device.type != "cuda":
        return None
    if use_triton is None:
        use_triton = trl_uses_triton(device)
    if not use_triton or _custom_triton_build():
        return None
    environ = os.environ if environ is None else environ
    if not (environ.get("CC") or which("gcc") or which("clang")):
        return ("distillation on CUDA runs TRL's Triton kernels, which Triton compiles with a C compiler, and none "
                "was found ($CC unset, no gcc or clang on PATH): install one (e.g. apt-get install gcc) or set CC")
    if python_include is None:
        import sysconfig

        scheme = sysconfig.get_default_scheme()
        python_include = Path(sysconfig.get_paths(scheme="posix_prefix" if scheme == "posix_local" else scheme)
                              ["include"])
    if not (python_include / "Python.h").is_file():
        return ("distillation on CUDA runs TRL's Triton kernels, which Triton compiles against Python's headers, "
                f"and {python_include / 'Python.h'} is missing: install them (e.g. apt-get install python3-dev)")
    return None


def trl_uses_triton(device) -> Optional[bool]:
    """Whether TRL takes its Triton kernels (the LM head's log-probabilities) on `device`: its own switch,
    `trl.kernels.chunked_logprob._use_triton` (None: a TRL without Triton kernels)."""
    try:
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:
        return None
    return bool(_use_triton(device))


def _custom_triton_build() -> bool:
    """Whether Triton was given a build function of its own (`triton.knobs.build.impl`), which needs no compiler."""
    try:
        from triton import knobs
    except ImportError:
        return False
    return getattr(getattr(knobs, "build", None), "impl", None) is not None


def bnb_cuda_error(device, lib=None) -> Optional[str]:
    """Why bitsandbytes cannot run 4-bit layers on this CUDA device (None: it can, or the device is not CUDA).
    bitsandbytes loads its native library when imported; where the CUDA one cannot load (no binary for this CUDA,
    a missing libcudart) it keeps a stand-in that raises at the first 4-bit call: for QLoRA, after the labels were
    generated. Its own record decides: a library built with CUDA (`compiled_with_cuda`), else the load error it kept.
    `lib`: bitsandbytes' `cextension.lib` unless given (a seam for tests)."""
    if device.type != "cuda":
        return None
    if lib is None:
        from bitsandbytes import cextension

        lib = cextension.lib
    if getattr(type(lib), "compiled_with_cuda", False):  # read off the class and the instance: the library
        return None                                      # object looks any other name up in the native library
    why = vars(lib).get("error_msg") or f"it loaded {type(lib).__name__}, a library without CUDA kernels"
    return (f"bitsandbytes cannot run 4-bit layers on CUDA here ({why.strip().splitlines()[0]}): QLoRA and NF4 "
            "generation need it; install the CUDA build (make install-cuda, in the README)")
