"""What the benchmarks share: the printed line, the config, the environment, random Qwen3 checkpoints, a meter
(wall time, CUDA and RSS peaks) and the way programs are run in a process of their own.

Run every benchmark as a module from the repository root (`python -m benchmarks.bench`), so that `benchmarks` is
importable as it is; nothing here imports torch or thinkswitch before it is needed.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("THINKSWITCH_CACHE", "~/.cache/thinkswitch")).expanduser()
GiB = 2**30


def offline() -> None:
    """No hub, no W&B: everything a benchmark uses is local (settings the caller already made win)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("WANDB_MODE", "disabled")


def line(name: str, value: float, unit: str, note: str = "") -> None:
    """One measurement: name, value, unit and a note, in columns."""
    print(f"{name:<44} {value:>10.3f} {unit:<10} {note}", flush=True)


def compose(overrides=(), run_dir: Path | str | None = None):
    """The experiment config exactly as `thinkswitch <overrides>` composes it (`thinkswitch.cli.compose`)."""
    from thinkswitch.cli import compose as cli_compose

    return cli_compose(list(overrides), **({"run_dir": str(run_dir)} if run_dir is not None else {}))


def run_program(name: str, *args: str) -> dict:
    """Run `benchmarks/programs/<name>.py` in a new interpreter (`python -m benchmarks.programs.<name> ARGS`, from
    the repository root) and return the JSON object its last line prints."""
    out = subprocess.run([sys.executable, "-m", f"benchmarks.programs.{name}", *args], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def random_qwen3(path: Path, hidden: int, layers: int, seed: int = 0, shards: int = 1) -> int:
    """A random-weight Qwen3 of `hidden` x `layers` (8 heads, 4 KV heads, tied embeddings) with the testbed's
    tokenizer, saved to `path` in `shards` files; its generation config ends at the tokenizer's EOS. Returns its
    parameter count."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    from thinkswitch.testbed.tokenizer import build_tokenizer

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    tok = build_tokenizer()
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=hidden // 8, tie_word_embeddings=True,
                      max_position_embeddings=2048, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None)
    model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    model.save_pretrained(path, max_shard_size=size // shards + 1)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def random_qwen3_pair(work: Path, hidden: int, layers: int, shards: int = 1) -> tuple[str, str]:
    """Two random Qwen3 checkpoints of one shape (thinking: seed 0, instruct: seed 1) under `work`."""
    for name, seed in (("thinking", 0), ("instruct", 1)):
        random_qwen3(work / name, hidden, layers, seed, shards)
    return str(work / "thinking"), str(work / "instruct")


def proc_status() -> dict[str, int]:
    """This process's resident memory from /proc/self/status, in bytes: VmRSS, VmHWM (the peak), RssAnon, RssFile."""
    fields = {}
    with open("/proc/self/status") as f:
        for row in f:
            key, _, value = row.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where /proc does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The peak RSS: VmHWM where /proc has it, else the peak since the process started."""
    try:
        return proc_status()["VmHWM"]
    except (OSError, KeyError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Meter:
    """Wall time, CUDA peak (reset at the start) and peak RSS (reset at the start where /proc allows) of a block:
    `seconds` and `stats` after it."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.reset = reset_peak_rss()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        self.stats = {"seconds": round(self.seconds, 2),
                      "cuda_peak_gib": round(torch.cuda.max_memory_allocated() / GiB, 3) if self.cuda else None,
                      "cuda_reserved_peak_gib": round(torch.cuda.max_memory_reserved() / GiB, 3) if self.cuda
                      else None,
                      "rss_peak_gib": round(peak_rss_bytes() / GiB, 3),
                      "rss_peak_since": "check" if self.reset else "process start"}
        return False
