"""The time model of `thinkswitch-plan`: estimated seconds per stage on a card, with every assumption named.

- **Decode is memory-bandwidth bound.** One decode step reads the weights once and the KV cache of every
  active sequence: seconds per step = (weight bytes + KV bytes read) / bandwidth / efficiency + a per-step
  overhead of the engine (kernel launches, Python, sampling: the same on every card, so it is not folded
  into the efficiency, which would make a factor measured on a fast card wrong on a slow one by several
  times). Calibration (`calibrate`) sets the overhead from a measured step time, the efficiency staying the
  stated share of peak bandwidth. Prefill is not counted (prompts are short next to the traces). NF4
  weights are read at their bf16 size (bitsandbytes dequantizes them for the matmul): 4-bit saves memory
  here, not time.
- **Ragged lengths.** Output lengths are assumed uniform between 0 and `max_new_tokens` (mean half of it).
  Static batches (HF `generate`) run until their longest member ends (expected b/(b+1) of `max_new_tokens`
  for b rows) and keep every row in the batch; continuous batching refills a finished slot at once, so it
  runs the total tokens at full concurrency plus a drain of about one mean trace.
- **Distillation** is compute bound: trained tokens x 6 x parameters (forward, backward through the frozen
  base, the forward again under activation checkpointing; 4 x without it) / (bf16 FLOP/s x MFU).
- **Loads, the adapter merge and the SLERP merge** move checkpoint bytes at the disk's bandwidth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from thinkswitch.config import Quantization

GB = 10**9


@dataclass(frozen=True)
class Assumptions:
    """The time model's constants; `source` says whether they are assumed or calibrated (and from what)."""

    efficiency: float = 0.7  # share of peak bandwidth a decode step's reads reach
    # seconds per decode step besides the reads, per engine: HF generate and transformers' continuous batching
    # run eagerly (36 layers of kernel launches and Python: ~25 steps/s for a 4B model on a 2 TB/s card, the
    # figure this project assumed before measuring); vLLM replays CUDA graphs
    static_overhead: float = 0.030
    continuous_overhead: float = 0.030
    vllm_overhead: float = 0.003
    mfu: float = 0.25  # QLoRA training: share of the card's bf16 FLOP/s reached (dequantization, small batches)
    disk_bandwidth: float = 1 * GB  # bytes/s for loading and writing checkpoints
    prompt_tokens: int = 512  # longest prompt (memory), and the prompt of every sequence (time)
    answer_tokens: int = 1000  # a stripped answer (distillation pairs)
    source: str = "assumed, not calibrated"

    def overhead(self, engine: str) -> float:
        return {"static": self.static_overhead, "continuous": self.continuous_overhead,
                "vllm": self.vllm_overhead}[engine]

    def calibrated(self, source: str, **factors: float) -> "Assumptions":
        return replace(self, source=source, **factors)


@dataclass(frozen=True)
class Decode:
    """A generation job's estimate."""

    seconds: float
    steps: int  # decode steps in all
    concurrency: float  # sequences decoded per step, on average

    def describe(self) -> str:
        return f"{self.steps:,} steps x {self.concurrency:.1f} sequences"


def step_seconds(nbytes: float, bandwidth: float, efficiency: float, overhead: float) -> float:
    """One decode step: its reads over the bandwidth reached, plus the engine's overhead."""
    return nbytes / (bandwidth * efficiency) + overhead


# HF generate's DynamicCache (transformers 5.25 `cache_utils.DynamicLayer.update`) appends each step's K/V with
# `torch.cat`: the whole cache copied (1 read + 1 write) every layer, every step, then read by SDPA (one query token
# per row: `pack_gqa`, no widening): 3 passes over the KV cache per step
HF_KV_PASSES = 3.0


def static_decode(*, sequences: int, rows: int, prompt: int, max_new: int, weight_read: int, kv_per_token: int,
                  bandwidth: float, efficiency: float, overhead: float, kv_passes: float = 1.0) -> Decode:
    """Static batches of `rows`: each lasts its expected longest trace (b/(b+1) of `max_new`) with all its b rows
    decoding (finished rows keep their KV and their step); the KV cache moved `kv_passes` times per step
    (`HF_KV_PASSES` for HF generate)."""
    seconds = steps = tokens = 0.0
    left = sequences
    while left > 0:
        b = min(rows, left)
        t = b / (b + 1) * max_new
        per_step = weight_read + kv_passes * b * (prompt + t / 2) * kv_per_token
        seconds += t * step_seconds(per_step, bandwidth, efficiency, overhead)
        steps += t
        tokens += b * t
        left -= b
    return Decode(seconds, int(steps), tokens / steps if steps else 0.0)


def cb_kv_passes(kv_groups: int, concurrency: float) -> float:
    """How many times transformers' `cb` moves each cached K/V byte per layer per decode step, under SDPA (the
    attention it runs: `engines.paged_cache.ATTENTION`), against the once a paged-attention kernel (vLLM) reads it.

    From transformers 5.25: the paged cache's `FullAttentionCacheAllocator.update`
    (`generation/continuous_batching/cache_allocators/full_attention.py`) reads every active request's K/V back
    from its pages with `index_select` into a new tensor (1 read + 1 write), every layer, every step; cb always
    passes an attention mask, so `integrations/sdpa_attention.sdpa_attention_forward` cannot use SDPA's own GQA
    (`use_gqa_in_sdpa` needs no mask on CUDA) and, with more than one query token in the batch (several requests
    decoding), widens K and V to every query head with `repeat_kv` (reads the copy once, writes `kv_groups`
    copies), which SDPA then reads (`kv_groups` reads): 3 + 2 x kv_groups passes (11 for Qwen3-4B, 32 query heads
    over 8 K/V heads). One request alone decodes one query token: `pack_gqa` instead, no widening: 3 passes, as
    without grouped heads (`kv_groups` 1: no `repeat_kv`). The mask (query tokens x cached tokens) is not counted."""
    return 3.0 + 2.0 * kv_groups if concurrency > 1 and kv_groups > 1 else 3.0


def kv_passes(mode: str, kv_groups: int, concurrency: float) -> float:
    """The passes over the KV cache per decode step of an engine's mode (static, continuous, vllm): `HF_KV_PASSES`,
    `cb_kv_passes`, once for vLLM's paged attention. The plan's decode time and `calibrate` count the same."""
    if mode == "static":
        return HF_KV_PASSES
    return cb_kv_passes(kv_groups, concurrency) if mode == "continuous" else 1.0


def continuous_decode(*, sequences: int, slots: int, prompt: int, max_new: int, weight_read: int, kv_per_token: int,
                      bandwidth: float, efficiency: float, overhead: float, kv_passes: float = 1.0) -> Decode:
    """Continuous batching with `slots` sequences at once: the total tokens (mean max_new / 2 each) at full
    concurrency plus a drain of one mean trace, or, when every sequence has a slot, the longest trace. An active
    sequence holds on average prompt + max_new / 3 tokens (a random step of a uniform length). The KV cache is moved
    `kv_passes` times per step: once by vLLM's paged attention, `cb_kv_passes` times by transformers' `cb`."""
    if sequences == 0:
        return Decode(0.0, 0, 0.0)
    total = sequences * max_new / 2
    if slots >= sequences:
        steps = sequences / (sequences + 1) * max_new
    else:
        steps = total / slots + max_new / 2
    active = total / steps
    per_step = weight_read + kv_passes * active * (prompt + max_new / 3) * kv_per_token
    return Decode(steps * step_seconds(per_step, bandwidth, efficiency, overhead), int(steps), active)


def training_seconds(*, tokens: int, params: int, flops: float, mfu: float, checkpointing: bool = True) -> float:
    """Trained tokens x (6 or 4) x parameters / (FLOP/s x MFU)."""
    return tokens * (6 if checkpointing else 4) * params / (flops * mfu)


def overhead_from(tokens_per_s: float, *, concurrency: float, weight_read: int, kv_read: float, bandwidth: float,
                  efficiency: float) -> float:
    """The per-step overhead a measurement implies: the measured step time less its reads at `efficiency` of the
    bandwidth (never < 0)."""
    return max(concurrency / tokens_per_s - (weight_read + kv_read) / (bandwidth * efficiency), 0.0)


def mfu_from(tokens_per_s: float, *, params: int, flops: float, checkpointing: bool = True) -> float:
    return tokens_per_s * (6 if checkpointing else 4) * params / flops


def describe_assumptions(a: Assumptions) -> list[str]:
    """The time model's assumptions, one Markdown bullet each, as the plan prints them."""
    return [
        "- decode is memory-bandwidth bound: seconds per step = (weights + the KV cache of every active sequence) "
        "/ bandwidth / efficiency + the engine's overhead per step; prefill not counted; NF4 weights read at "
        "their bf16 size (bitsandbytes dequantizes them: 4-bit saves memory, not time).",
        "- transformers' continuous batching (cb) under SDPA moves the KV cache 3 + 2 x (query heads per K/V head) "
        "times per step, 11 for Qwen3-4B (each layer copies the active requests' K/V out of its pages, then widens "
        "the copy to every query head for SDPA, which an attention mask keeps from using GQA): 3 times with one "
        "request; HF generate's cache (static batches) 3 times (it appends each step with torch.cat, a copy of the "
        "whole cache); vLLM reads it once.",
        f"- efficiency {a.efficiency:.2g} of peak bandwidth; overhead per step: static HF batches "
        f"{a.static_overhead * 1000:.1f} ms, continuous batching {a.continuous_overhead * 1000:.1f} ms, vLLM "
        f"{a.vllm_overhead * 1000:.1f} ms; distillation MFU {a.mfu:.3g} ({a.source}).",
        "- ragged lengths: outputs uniform between 0 and max_new_tokens (mean half); a static batch of b lasts "
        "b/(b+1) of max_new_tokens with all b rows decoding; continuous batching runs the total tokens at full "
        "concurrency plus a drain of one mean trace (or the longest trace when every sequence has a slot).",
        f"- prompts of {a.prompt_tokens} tokens (memory: the longest; time: every one); stripped answers of "
        f"{a.answer_tokens} tokens; distillation: trained tokens x 6 x parameters (4 without activation "
        "checkpointing) / (bf16 FLOP/s x MFU).",
        f"- loads, the adapter merge (read the base, write the merged checkpoint) and the SLERP merge (read two, "
        f"write one) at {a.disk_bandwidth / GB:.0f} GB/s of disk; a run: iteration 0's evaluation, then every "
        "iteration's generate, distill, merge, evaluate.",
    ]


def read_rows(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--calibrate {path}: not a gpu-check JSON-lines file ({e})") from None


@dataclass(frozen=True)
class Measured:
    """One decode measurement of a gpu-check row: its engine's mode, tokens/s, sequences decoded per step on
    average, sequences whose KV cache each step reads, mean new tokens and prompt tokens per sequence."""

    mode: str  # static, continuous, vllm
    label: str
    tokens_per_s: float
    concurrency: float
    kv_rows: float
    new_tokens: float
    prompt_tokens: float


def measurements(rows: list[dict]) -> list[Measured]:
    """The decode measurements of a `make gpu-check` output, the run's own stage first: `generate` and `vllm` rows
    (a `backend` of hf, cb or vllm, as the run resolved it: static, continuous, vLLM), then the `cb` benchmark
    rows (ragged lengths, EOS off: their static batches and continuous batching, each over its decode steps).
    Rows that failed, NF4 rows (dequantization is not in the time model) and rows without a measurement are
    skipped."""
    staged, bench = [], []
    for row in rows:
        if row.get("error") or row.get("quantization") == Quantization.nf4:
            continue
        mode = {"hf": "static", "cb": "continuous", "vllm": "vllm"}.get(row.get("backend", ""))
        prompt = row.get("prompt_tokens", 250)
        if mode and row.get("tokens_per_s"):
            prompts, new = row["prompts"], row["tokens"] / row["prompts"]
            at_once = row.get("concurrency") or (min(row.get("batch_size") or prompts, prompts)
                                                 if mode == "static" else prompts)
            staged.append(Measured(mode, f"{row['check']} ({row['backend']})", row["tokens_per_s"], at_once, at_once,
                                   new, prompt))
        elif row.get("check") == "cb" and row.get("cb_tokens_per_s") and row.get("static_tokens_per_s"):
            tokens, new = row["tokens"], row["tokens"] / row["prompts"]
            per_step = tokens / row["longest"]  # every request has a slot from the start: steps = the longest
            bench.append(Measured("continuous", "cb", row["cb_tokens_per_s"], per_step, per_step, new, prompt))
            bench.append(Measured("static", "cb static", row["static_tokens_per_s"], tokens / row["static_steps"],
                                  min(row.get("static_batch") or row["prompts"], row["prompts"]), new, prompt))
    return staged + bench


def calibrate(path: Path, a: Assumptions) -> Assumptions:
    """Per-step overheads and MFU from a `make gpu-check` output (`measurements`): each decode measurement gives
    the overhead of its engine (the first one per engine), its `distill` row (trained tokens/s over the whole stage,
    loads included: a lower bound) the MFU. Run at Qwen3-4B's body shape (the `build` rows give its parameters)
    on a card of the table (the `env` row names it)."""
    from thinkswitch.sizing.cards import card_for_device_name
    from thinkswitch.sizing.shapes import QWEN3_4B_2507, kv_bytes_per_token

    rows = read_rows(path)
    env = next((r for r in rows if r.get("check") == "env"), {})
    card = card_for_device_name(env.get("gpu") or "")
    if card is None:
        raise ValueError(f"--calibrate {path}: the GPU {env.get('gpu')!r} is not in the card table")
    params = next((r["params"] for r in rows if r.get("check") == "build" and "params" in r), None)
    if params is None:
        raise ValueError(f"--calibrate {path}: no build row (the checkpoint's parameters)")
    kv = kv_bytes_per_token(QWEN3_4B_2507, "bfloat16")
    groups = QWEN3_4B_2507["num_attention_heads"] // QWEN3_4B_2507["num_key_value_heads"]
    factors, used = {}, []
    for m in measurements(rows):
        if f"{m.mode}_overhead" in factors:
            continue
        # the KV traffic the plan counts for this engine (`kv_passes`), so the overhead is what is left
        passes = kv_passes(m.mode, groups, m.concurrency)
        factors[f"{m.mode}_overhead"] = overhead_from(
            m.tokens_per_s, concurrency=m.concurrency, weight_read=2 * params,
            kv_read=passes * m.kv_rows * (m.prompt_tokens + m.new_tokens / 2) * kv, bandwidth=card.bandwidth,
            efficiency=a.efficiency)
        used.append(f"{m.label} {m.tokens_per_s:,.0f} tokens/s")
    distill = next((r for r in rows if r.get("check") == "distill" and r.get("tokens_per_s") and not r.get("error")),
                   None)
    if distill:
        factors["mfu"] = mfu_from(distill["tokens_per_s"], params=params, flops=card.bf16_flops)
        used.append(f"distill {distill['tokens_per_s']:,.0f} tokens/s")
    if not factors:
        raise ValueError(f"--calibrate {path}: no generate, cb, vllm or distill measurement in it")
    return a.calibrated(f"calibrated from {Path(path).name} on {env['gpu']}: {', '.join(used)}; the others assumed",
                        **{k: round(v, 5) for k, v in factors.items()})
