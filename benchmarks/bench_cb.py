"""Continuous batching (generation.backend=cb) against static HF batches on ragged lengths, one run, ratios printed.

    python -m benchmarks.bench_cb [--quick]      (from the repository root; also a section of benchmarks/bench.py)

The `ragged` case of bench_vllm.py: a random Qwen3 (~25M parameters, built here), greedy, every prompt's answer
of its own length drawn log-uniformly from [16, 128] (--quick) or [16, 512] tokens, as thinking traces end at very
different lengths. Static HF: `generate` in batches of 64 prompts sorted by length (as the HF backend batches), each
batch running to its longest length (a finished row idles). Continuous batching: transformers'
`ContinuousBatchingManager` (as `engines.cb` drives it), each request stopping at its own length, its slot refilled.
EOS is off in both: both generate exactly the drawn number of tokens per prompt, and greedy outputs are compared.
`ragged_static` and `ragged_cb` serve `gpu_check.py`'s `cb` check too.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import compose, line, offline, random_qwen3


def ragged_lengths(n: int, lo: int, hi: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [int(math.exp(rng.uniform(math.log(lo), math.log(hi)))) for _ in range(n)]


STATIC_BATCH = 64  # rows of a static batch (`ragged_static`)


def static_steps(lengths: list[int], prompts: list[str], batch: int = STATIC_BATCH) -> int:
    """Decode steps `ragged_static` runs: each batch (prompts sorted by length) to its longest length."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return sum(max(lengths[i] for i in order[s:s + batch]) for s in range(0, len(order), batch))


def ragged_static(model, tok, prompts: list[str], lengths: list[int],
                  batch: int = STATIC_BATCH) -> tuple[list[list[int]], float]:
    """Static batches (prompts sorted by length, left-padded), each running to its longest length with EOS off; each
    row cut to its own length. Returns (tokens per prompt, seconds)."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            enc = tok([prompts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
            longest = max(lengths[i] for i in rows)
            gen = model.generate(**enc.to(model.device), do_sample=False, max_new_tokens=longest,
                                 min_new_tokens=longest, pad_token_id=tok.pad_token_id, temperature=None, top_p=None,
                                 top_k=None)
            for i, row in zip(rows, gen[:, enc["input_ids"].shape[1]:].tolist()):
                out[i] = row[:lengths[i]]
    _sync(model)
    return out, time.perf_counter() - t0


def ragged_cb(model, tok, prompts: list[str], lengths: list[int]) -> tuple[list[list[int]], float]:
    """Continuous batching, each request stopping at its own length (EOS off). Returns (tokens per prompt, seconds,
    manager start included)."""
    import copy

    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching.continuous_api import WorkloadHints

    from thinkswitch.config import SamplingConfig
    from thinkswitch.engines.cb import cache_config

    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    config = copy.deepcopy(model.generation_config)
    config.update(do_sample=False, temperature=None, top_p=None, top_k=None, min_new_tokens=None, eos_token_id=-1,
                  pad_token_id=tok.pad_token_id)
    hints = WorkloadHints(max_prompt_length=max(map(len, ids)), max_generated_length=max(lengths),
                          num_requests=len(ids))
    t0 = time.perf_counter()
    cb_config = cache_config(ContinuousBatchingConfig, model, ids,  # as engines.cb
                             SamplingConfig(max_new_tokens=max(lengths), do_sample=False), 0)
    manager = model.init_continuous_batching(generation_config=config, workload_hints=hints,
                                             continuous_batching_config=cb_config)
    for i, (x, n) in enumerate(zip(ids, lengths)):
        manager.add_request(x, request_id=str(i), max_new_tokens=n, eos_token_id=-1)
    manager.start()
    out: list[list[int]] = [[] for _ in prompts]
    try:
        pending = set(range(len(ids)))
        while pending:
            r = manager.get_result(timeout=1)
            if r is None:
                if not manager.is_running():
                    raise RuntimeError("continuous batching stopped early")
                continue
            if r.is_finished():
                if r.error is not None:
                    raise RuntimeError(r.error)
                out[int(r.request_id)] = list(r.generated_tokens)
                pending.discard(int(r.request_id))
    finally:
        manager.stop(block=True)
        manager.destroy()
    _sync(model)
    return out, time.perf_counter() - t0


def _sync(model) -> None:
    import torch

    if model.device.type == "cuda":
        torch.cuda.synchronize()


def bench_cb(work: Path, quick: bool) -> None:
    """Static HF vs continuous batching on the ragged case, in this process (CPU, the model's dtype)."""
    import torch

    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.models import load_model, load_tokenizer

    n, hi = (16, 128) if quick else (64, 512)
    path = work / "random_qwen3_cb"
    params = random_qwen3(path, 512, 8)
    cfg = compose([])
    tok = load_tokenizer(str(path), cfg.model)
    prompts = [chat_prompt(tok, ex["prompt"]) for ex in task_examples(n, 5, "train", TestbedSpec())]
    lengths = ragged_lengths(n, 16, hi)
    note = f"{params / 1e6:.0f}M params, {n} prompts, lengths 16-{hi} (mean {sum(lengths) / n:.0f})"
    cpu = torch.device("cpu")
    static_model = load_model(str(path), cfg.model, cpu)
    ragged_static(static_model, tok, prompts[:4], lengths[:4])  # warm-up
    static, static_s = ragged_static(static_model, tok, prompts, lengths)
    del static_model
    cb_model = load_model(str(path), cfg.model, cpu, attn_implementation="sdpa")
    ragged_cb(cb_model, tok, prompts[:4], lengths[:4])  # warm-up
    cb, cb_s = ragged_cb(cb_model, tok, prompts, lengths)
    tokens = sum(lengths)
    assert [len(r) for r in cb] == lengths and [len(r) for r in static] == lengths
    line("cb [ragged]: static HF batches", tokens / static_s, "tokens/s", note)
    line("cb [ragged]: continuous batching", tokens / cb_s, "tokens/s", "manager start included")
    line("cb [ragged]: continuous batching / static HF", static_s / cb_s, "x",
          f"greedy outputs equal: {sum(a == b for a, b in zip(cb, static))}/{n}")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    offline()
    with tempfile.TemporaryDirectory() as tmp:
        bench_cb(Path(tmp), args.quick)


if __name__ == "__main__":
    main()
