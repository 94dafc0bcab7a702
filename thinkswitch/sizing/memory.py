"""The generation memory plan, made before any model loads: the batch that fits, or a refusal with the numbers.

The HF backend reserves a batch's KV cache for every row, up to the batch's longest prompt plus
`max_new_tokens`, so the batch is a token budget: the free memory less the weights, less a margin held back
for activations and fragmentation, divided by one sequence's KV (`thinkswitch.sizing.shapes`). The weights
are counted in the load dtype, or in NF4 with `generation.quantization=nf4` (`thinkswitch.sizing.weights`).
The distillation estimate is `thinkswitch.sizing.distill_memory`, free memory `thinkswitch.engines.free_memory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from thinkswitch.config import Quantization
from thinkswitch.engines.free_memory import free_memory
from thinkswitch.errors import ConfigError
from thinkswitch.sizing.shapes import GiB, fmt_bytes, kv_bytes_per_token, layout_notes, load_config
from thinkswitch.sizing.weights import checkpoint_tensors, generation_weight_bytes


@dataclass(frozen=True)
class GenerationPlan:
    """What one generation needs and the batch it gets (HF backend: KV cache reserved per batch for the
    longest prompt of the batch plus `max_new_tokens`, for every row)."""

    device: str
    kv_bytes_per_token: int
    weight_bytes: int
    free_bytes: int  # before the weights load
    margin: float  # share of the memory left after the weights held back (activations, fragmentation)
    max_new_tokens: int
    longest_prompt: int
    sequences: int  # prompts x samples per prompt
    batch_size_cap: int  # generation.batch_size: an upper bound
    batch_size: int  # rows of a batch of the longest prompts
    token_budget: int  # KV tokens one batch may hold: rows x (longest prompt + max_new_tokens) <= this
    notes: tuple[str, ...] = ()
    quantization: Quantization = Quantization.none  # generation.quantization: the weights' format

    @property
    def available_bytes(self) -> int:
        """Free after the weights, less the margin: what the KV cache may take."""
        return self.token_budget * self.kv_bytes_per_token

    @property
    def sequence_tokens(self) -> int:
        return self.longest_prompt + self.max_new_tokens

    @property
    def sequence_bytes(self) -> int:
        return self.sequence_tokens * self.kv_bytes_per_token

    @property
    def binding(self) -> bool:
        """True when the budget, not `generation.batch_size`, sets the batch."""
        return self.batch_size < min(self.batch_size_cap, max(self.sequences, 1))

    @property
    def batches(self) -> int:
        """Batches at most (every batch as long as the longest prompt)."""
        return math.ceil(self.sequences / self.batch_size) if self.sequences else 0

    def describe(self) -> str:
        """One paragraph for the log."""
        quantized = f" ({self.quantization})" if self.quantization != Quantization.none else ""
        text = (f"generation memory plan on {self.device}: {fmt_bytes(self.free_bytes)} free, weights "
                f"{fmt_bytes(self.weight_bytes)}" + quantized
                + f", KV cache {fmt_bytes(self.kv_bytes_per_token)}/token, "
                f"{fmt_bytes(self.sequence_bytes)} per sequence ({self.longest_prompt} prompt + "
                f"{self.max_new_tokens} new tokens); KV budget {self.token_budget:,} tokens "
                f"({fmt_bytes(self.available_bytes)}, {self.margin:.0%} of the rest held back); "
                f"{self.sequences} sequences in batches of up to {self.batch_size}"
                + (f" (the memory limit; generation.batch_size={self.batch_size_cap})" if self.binding
                   else f" (generation.batch_size={self.batch_size_cap})")
                + f", at most {self.batches} batches")
        return text + (f"; note: {'; '.join(self.notes)}" if self.notes else "") + "."


def plan_generation(*, kv_bytes_per_token: int, prompt_tokens: Sequence[int], max_new_tokens: int,
                    samples_per_prompt: int = 1, free_bytes: int, weight_bytes: int = 0, batch_size: int,
                    device: str = "cpu", margin: float = 0.1, key: str = "model.sampling.thinking.max_new_tokens",
                    notes: Sequence[str] = (), quantization: Quantization = Quantization.none) -> GenerationPlan:
    """The largest batch that fits, as a KV-token budget; `batch_size` is an upper bound.

    `free_bytes` is the device's free memory before the weights load; what is left after `weight_bytes`,
    less `margin` of it, is the KV budget. Raises ConfigError, with the numbers, when the weights or one
    sequence of the longest prompt cannot fit; `key` names the setting to lower.
    """
    if kv_bytes_per_token < 1 or max_new_tokens < 1 or batch_size < 1 or samples_per_prompt < 1:
        raise ValueError("kv_bytes_per_token, max_new_tokens, batch_size and samples_per_prompt must be >= 1")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    longest = max(prompt_tokens, default=0)
    nf4 = ", generation.quantization=nf4" if quantization == Quantization.none else ""
    if weight_bytes >= free_bytes:
        raise ConfigError(f"the weights need {fmt_bytes(weight_bytes)}; {fmt_bytes(free_bytes)} free on {device}; "
                          f"use a device with more free memory{nf4 and ' or generation.quantization=nf4'}")
    after_weights = free_bytes - weight_bytes
    token_budget = int(after_weights * (1 - margin)) // kv_bytes_per_token
    per_sequence = longest + max_new_tokens
    if per_sequence > token_budget:
        name = key.rsplit(".", 1)[-1]
        raise ConfigError(
            f"{name}={max_new_tokens} needs {fmt_bytes(per_sequence * kv_bytes_per_token)} of KV cache per sequence "
            f"({longest} prompt + {max_new_tokens} new tokens x {fmt_bytes(kv_bytes_per_token)}/token); "
            f"{fmt_bytes(after_weights)} free after weights on {device} ({fmt_bytes(free_bytes)} free, "
            f"{fmt_bytes(weight_bytes)} of weights, {margin:.0%} of the rest held back); lower {key}{nf4} "
            "or use a device with more free memory")
    sequences = len(prompt_tokens) * samples_per_prompt
    fit = token_budget // per_sequence
    return GenerationPlan(device=device, kv_bytes_per_token=kv_bytes_per_token, weight_bytes=weight_bytes,
                          free_bytes=free_bytes, margin=margin, max_new_tokens=max_new_tokens, longest_prompt=longest,
                          sequences=sequences, batch_size_cap=batch_size,
                          batch_size=min(batch_size, fit, max(sequences, 1)), token_budget=token_budget,
                          notes=tuple(notes), quantization=quantization)


def plan_generation_for(ref: Union[str, Path], *, dtype: str, device: str, prompt_tokens: Sequence[int],
                        max_new_tokens: int, batch_size: int, samples_per_prompt: int = 1,
                        config: Optional[Mapping] = None, free_bytes: Optional[int] = None, margin: float = 0.1,
                        key: str = "model.sampling.thinking.max_new_tokens",
                        quantization: Quantization = Quantization.none) -> GenerationPlan:
    """`plan_generation` for a checkpoint (a local directory, or a hub id with `config`): KV bytes per token
    from its config, weights from its safetensors headers (else its config; in NF4 with `quantization="nf4"`),
    free memory measured now unless given. `dtype` is the resolved load dtype (`resolve_dtype`)."""
    cfg = load_config(ref, config)
    tensors, _ = checkpoint_tensors(ref, cfg)
    return plan_generation(
        kv_bytes_per_token=kv_bytes_per_token(cfg, dtype), prompt_tokens=prompt_tokens,
        max_new_tokens=max_new_tokens, samples_per_prompt=samples_per_prompt,
        free_bytes=free_memory(device) if free_bytes is None else free_bytes,
        weight_bytes=generation_weight_bytes(tensors, dtype, quantization), batch_size=batch_size, device=device,
        margin=margin, key=key, notes=layout_notes(cfg), quantization=quantization)


# ----------------------------------------------------------------------------------------------------------------
# vLLM's KV pool (`cb`'s paged cache is transformers' own sizing: `engines.paged_cache`)


def vllm_kv_pool_bytes(total_bytes: int, weight_bytes: int, gpu_memory_utilization: float = 0.9,
                       activation_bytes: int = 2 * GiB) -> int:
    """What vLLM 0.32 gives its KV cache (`v1/worker/gpu_worker.determine_available_memory`): the requested memory
    (`gpu_memory_utilization` x the card's total as CUDA reports it) less what its profiling run found outside the
    KV cache: the weights and the activation peak with CUDA graphs (`activation_bytes`: an assumption, vLLM
    measures it). Never < 0."""
    return max(int(total_bytes * gpu_memory_utilization) - weight_bytes - activation_bytes, 0)


def describe(plan) -> str:
    """One paragraph for the log: a `GenerationPlan` or a `distill_memory.DistillPlan`."""
    return plan.describe()
