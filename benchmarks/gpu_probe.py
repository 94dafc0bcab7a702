"""`make gpu-check`'s first rows: the cheap checks, each a few seconds on a card, run before anything is spent.

    env            torch and CUDA (driver, CUDA build, card), a C compiler for Triton, bitsandbytes' CUDA kernels
                   (an NF4 round trip on the card)
    vllm_build     the installed vLLM: the platform and quantizations `make install-vllm` recorded, and what the
                   build itself says (`vllm_worker --describe`); recorded, not fatal (findings 1, 2)
    validation     the run's config validation in a child process: whether it started CUDA (then `device=auto`
                   pinning has no effect), and the GPUs the child sees once `choose_device` pinned one (finding 5)
    cb_cache       the cb engine on the testbed pair: the paged cache transformers sized itself on the card beside
                   `plan_paged_cache`'s prediction for the same free memory, and the attention actually used
                   (findings 3, 6)
    vllm_startup   a CUDA vLLM started on the testbed pair with the run's `max_model_len`: free memory before and
                   after, the project's start-up check beside it (finding 4; skipped without a CUDA build)
    qlora_step     one optimizer step of the project's QLoRA trainer on the testbed pair: TRL's Triton LM-head path,
                   which needs a C compiler (finding 10)

Each function takes (args, device, work, report) and reports its rows; `gpu_check.main` records an exception as the
row's error and goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common import ROOT, GiB, Meter, compose


def _versions() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "mergekit", "accelerate", "datasets",
                 "triton", "kernels"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


def _driver() -> str | None:
    """The NVIDIA driver's version (nvidia-smi), None where there is none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _bnb(device) -> dict:
    """bitsandbytes' native library and, on CUDA, an NF4 round trip on the card."""
    import bitsandbytes
    import torch
    from bitsandbytes import cextension

    out = {"bnb_library": type(cextension.lib).__name__}
    if device.type == "cuda":
        import bitsandbytes.functional as F

        x = torch.randn(256, 256, device=device, dtype=torch.bfloat16)
        q, state = F.quantize_4bit(x, quant_type="nf4")
        err = (F.dequantize_4bit(q, state) - x).abs().mean().item() / x.abs().mean().item()
        out.update(bnb_nf4_relative_error=round(err, 4), bnb_cuda=err < 0.2)
    out["bnb_version"] = bitsandbytes.__version__
    return out


def environment(args, device, work: Path, report) -> None:
    import platform

    import torch
    from transformers.utils import is_triton_available

    from thinkswitch.engines.devices import triton_build_error

    cuda = device.type == "cuda"
    row = {"check": "env", "device": str(device), "gpu": torch.cuda.get_device_name(device) if cuda else None,
           "gpu_total_gib": round(torch.cuda.get_device_properties(device).total_memory / GiB, 1) if cuda else None,
           "gpus": torch.cuda.device_count() if cuda else 0, "driver": _driver(), "cuda_build": torch.version.cuda,
           "capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else None,
           "compilers": {name: shutil.which(name) for name in ("cc", "gcc")}, "triton": is_triton_available(),
           "triton_build_error": triton_build_error(device),  # what the run's start-up check would refuse
           "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "versions": _versions(), "scale": args.scale, "args": vars(args)}
    row.update(_bnb(device))
    if cuda and not row.get("bnb_cuda"):
        row["error"] = (f"bitsandbytes has no working CUDA kernels here ({row['bnb_library']}): QLoRA and NF4 "
                        "generation will fail; see the README's CUDA install")
    report(row)


def check_vllm_build(args, device, work: Path, report) -> None:
    """What `make install-vllm` recorded and what the build says of itself (a minute at most; not fatal)."""
    from thinkswitch.engines.vllm_backend import venv_process_env
    from thinkswitch.engines.vllm_options import installed_platform, nf4_error, vllm_venv

    python = vllm_venv() / "bin" / "python"
    row = {"check": "vllm_build", "venv": str(vllm_venv()), "installed": python.exists(),
           "recorded_platform": installed_platform(), "nf4_refused": nf4_error() or None}
    if python.exists():
        try:
            proc = subprocess.run([str(python), "-m", "thinkswitch.engines.vllm_worker", "--describe"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=180, env=venv_process_env())
            described = json.loads(proc.stdout) if proc.returncode == 0 else {}
            row["describe_error"] = None if described else proc.stderr.strip().splitlines()[-1:]
        except (OSError, subprocess.TimeoutExpired, ValueError) as e:
            described, row["describe_error"] = {}, f"{type(e).__name__}: {e}"
        methods = described.get("quantizations") or []
        row.update(vllm_version=described.get("vllm_version"), platform=described.get("platform"),
                   bitsandbytes="bitsandbytes" in methods, quantizations=methods,
                   auto_picks_vllm=installed_platform() == "cuda")
    report(row)


VALIDATION_CHILD = """
import json, sys, tempfile
from thinkswitch.cli import compose
from thinkswitch.validate import check_config
cfg = compose(sys.argv[1:])
check_config(cfg)
import torch
after = torch.cuda.is_initialized()
from thinkswitch.engines.devices import choose_device
device, lock = choose_device("auto", __import__("pathlib").Path(tempfile.mkdtemp()), cfg.run_dir)
print(json.dumps({"cuda_initialized_by_validation": after, "device": str(device),
                  "gpus_seen_after_pinning": torch.cuda.device_count() if device.type == "cuda" else 0}))
"""


def check_validation(args, device, work: Path, report) -> None:
    """The run's validation (`check_config`, the QLoRA trainer's SFTConfig included) in a fresh process, then
    `choose_device('auto')`: validation must not start CUDA, and the pinned run must see one GPU."""
    overrides = ["trainer=qlora", "device=auto", f"run_dir={work / 'run'}"]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # carried wheels kept on it
    proc = subprocess.run([sys.executable, "-c", VALIDATION_CHILD, *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": path})
    if proc.returncode != 0:
        raise RuntimeError(f"the validation child failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    row = {"check": "validation", "overrides": overrides, **json.loads(proc.stdout.strip().splitlines()[-1])}
    if row["cuda_initialized_by_validation"]:
        row["error"] = "validation started CUDA: device=auto's pinning (CUDA_VISIBLE_DEVICES) has no effect"
    elif row["gpus_seen_after_pinning"] > 1:
        row["error"] = f"the pinned run sees {row['gpus_seen_after_pinning']} GPUs, not one"
    report(row)


def testbed_pair(work: Path):
    from thinkswitch.setup import resolve_pair

    base = compose([], work / "unused")
    return base, resolve_pair(base.model, Path(base.cache_dir).expanduser())


def _transformers_blocks(model, generation_config, kwargs: dict) -> int:
    """The blocks transformers' own sizing gives the paged cache (`num_blocks` unset: it measures the free memory
    itself), built as the generation thread builds it, then released."""
    import gc

    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    manager = model.init_continuous_batching(generation_config=generation_config,
                                             continuous_batching_config=ContinuousBatchingConfig(**kwargs))
    try:
        processor = manager._create_batch_processor()
        blocks = int(processor.cache.num_blocks)
        del processor
    finally:
        manager.batch_processor = None
        manager.destroy()
        del manager
        gc.collect()
    return blocks


def check_cb_cache(args, device, work: Path, report) -> None:
    """transformers' paged cache on the card vs `plan_paged_cache` for the same free memory (CUDA: the cap at what
    the requests need lifted, so the rule itself is compared; the CPU only checks the engine's explicit size), and
    the attention the engine runs (SDPA kept: no flash kernel from the hub)."""
    import torch

    from thinkswitch.engines.cb import CBBackend, _logits_to_keep
    from thinkswitch.engines.free_memory import free_memory
    from thinkswitch.engines.paged_cache import ATTENTION, plan_paged_cache

    base, pair = testbed_pair(work)
    backend = CBBackend.load(pair.thinking, model_cfg=base.model, device=device, gen_cfg=base.generation)
    model, sampling, cuda = backend.model, base.model.sampling.thinking, device.type == "cuda"
    try:
        config = backend.generation_config(sampling)
        free = free_memory(str(device))
        plan = plan_paged_cache(model.config, dtype=str(model.dtype).removeprefix("torch."), device=str(device),
                                free_bytes=free, prompt_tokens=[64] * (1024 if cuda else 4),
                                max_new_tokens=10**7 if cuda else sampling.max_new_tokens,
                                do_sample=bool(sampling.do_sample), supports_logits_to_keep=_logits_to_keep(model))
        kwargs = plan.config_kwargs() | ({"num_blocks": None} if cuda else {})
        built = _transformers_blocks(model, config, kwargs)
        attention = model.config._attn_implementation
        outputs = backend.generate(["a b c", "d e f g"], sampling, seed=0)
    finally:
        backend.close()
    if cuda:
        torch.cuda.empty_cache()
    row = {"check": "cb_cache", "free_gib": round(free / GiB, 3), "memory_share": plan.memory_share,
           "max_batch_tokens": plan.max_batch_tokens, "planned_blocks": plan.num_blocks, "built_blocks": built,
           "built_over_planned": round(built / max(plan.num_blocks, 1), 4), "sized_by": "transformers" if cuda
           else "the plan (explicit num_blocks)", "attention": attention, "generated": len(outputs)}
    if attention != ATTENTION:
        row["error"] = f"the cb engine runs {attention!r} attention, not {ATTENTION!r} as loaded and planned"
    elif abs(row["built_over_planned"] - 1) > 0.05:
        row["error"] = (f"transformers built {built} blocks, the plan predicted {plan.num_blocks}: "
                        "plan_paged_cache no longer models transformers' sizing")
    report(row)


def check_vllm_startup(args, device, work: Path, report) -> None:
    """A CUDA vLLM started on the testbed pair with the run's `max_model_len` (the longest prompt + budget, as the
    run sets it): free memory before and after, and the project's start-up check on the same numbers."""
    from thinkswitch.engines.vllm_options import installed_platform

    if device.type != "cuda" or installed_platform() != "cuda":
        report({"check": "vllm_startup", "skipped": f"no CUDA vLLM here (device {device.type}, vLLM platform "
                                                    f"{installed_platform()})"})
        return
    import torch

    from thinkswitch.engines.base import Generator
    from thinkswitch.engines.vllm_options import startup_memory_error
    from thinkswitch.sizing.run_plan import with_vllm_context

    base = compose(["generation.backend=vllm", "device=cuda"], work / "unused")
    _, pair = testbed_pair(work)
    context = 512 + base.model.sampling.thinking.max_new_tokens
    generation = with_vllm_context(base.generation, context)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    utilization = float((generation.vllm or {}).get("gpu_memory_utilization") or 0.9)
    with Meter(device) as m:
        with Generator(model=base.model, generation=generation, device=device).open(pair.thinking) as engine:
            during = torch.cuda.mem_get_info(device)[0]
            startup_s = engine.startup_s
    after = torch.cuda.mem_get_info(device)[0]
    report({"check": "vllm_startup", "max_model_len": generation.vllm["max_model_len"], "utilization": utilization,
            "free_before_gib": round(free / GiB, 2), "free_running_gib": round(during / GiB, 2),
            "free_after_gib": round(after / GiB, 2), "total_gib": round(total / GiB, 2), "startup_s": startup_s,
            "project_check": startup_memory_error(free, total, utilization) or "starts", **m.stats})


def check_qlora_step(args, device, work: Path, report) -> None:
    """One optimizer step of `trainer=qlora` on the testbed instruct checkpoint (`distill.distill`, `max_steps=1`):
    the CUDA training path (bitsandbytes NF4, TRL's loss, its Triton LM-head kernel where Triton is there)."""
    import random

    from benchmarks.gpu_stages import words
    from thinkswitch.engines.devices import trl_uses_triton
    from thinkswitch.stages import distill
    from thinkswitch.stages.inputs import Artifact, Numerics
    from thinkswitch.store.io import parse_size, write_jsonl

    cfg = compose(["trainer=qlora", f"device={device.type}", "+trainer.sft.max_steps=1"], work / "run")
    _, pair = testbed_pair(work)
    rng = random.Random(5)
    pairs = work / "pairs.jsonl"
    write_jsonl(pairs, [{"id": f"q{i}", "sample": 0, "prompt": words(rng, 40), "completion": words(rng, 60)}
                        for i in range(8)])
    with Meter(device) as m:
        metrics = distill.distill(distill.DistillInputs(
            instruct=Artifact.at(Path(pair.instruct)), pairs=Artifact.at(pairs), trainer=cfg.trainer,
            model=cfg.model, seed=3, system_prompt=None, numerics=Numerics.of(cfg, device),
            shard_size=parse_size(cfg.shard_size), adapter_out=work / "out" / "adapter",
            model_out=work / "out" / "instruct"), device=device)
    report({"check": "qlora_step", "trainer": cfg.trainer.name, "triton_lm_head": trl_uses_triton(device),
            "steps": metrics.get("train/steps"), "loss": metrics.get("train/loss"), **m.stats})
    shutil.rmtree(work / "out", ignore_errors=True)

