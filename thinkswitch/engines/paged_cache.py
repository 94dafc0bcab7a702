"""The `cb` engine's paged KV cache, sized as transformers sizes it, before anything loads and again at load.

transformers' continuous batching (5.25, `continuous_batching/cache.py`: `PagedAttentionMemoryHandler`) gives its
paged cache a share of the free memory after the weights (`resolve_max_memory_percent`: 0.9, 0.8 when a logits
processor runs, as sampling does, 0.6 on the CPU), less a reserve for a batch of `max_batch_tokens` (8,192 by
default: the LM head's or the attention's activation peak per batch token), less, per cache token, what the
attention reads back (under SDPA the K/V of every layer widened to all query heads, 72 rows of 128 for Qwen3-4B
beside the cache's 16) and an attention mask of M x (N + M). A request needs pages of `page_size` tokens for its
prompt and everything it generates; when the only running request cannot grow, transformers raises "No requests
can be scheduled" (hours in, on the request that runs longest).

`plan_paged_cache` runs transformers' own handler on a given free memory (`_GivenMemory`: only the measurement is
replaced) and returns the cache the engine then asks for explicitly (`ContinuousBatchingConfig(num_blocks=...,
max_batch_tokens=..., max_memory_percent=..., auto_switch_to_flash=False)`), or refuses, with the numbers and the
`max_new_tokens` that would fit, a run whose longest trace cannot fit. On the CPU the cache is capped at what every
request needs at once and a batch at the prompts' tokens (more only makes each step attend over empty pages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from thinkswitch.errors import ConfigError

GiB = 2**30


def fmt_bytes(n: float) -> str:
    """`4.5 GiB`: binary units, one decimal (as `sizing.shapes.fmt_bytes`; engines sit below sizing)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"

PAGE_SIZE = 256  # tokens per page (transformers' default)
ATTENTION = "sdpa"  # what the engine loads and keeps (auto_switch_to_flash=False)
# what transformers resolves under SDPA (no flash decode path: no block table; a mask: no async double buffers)
FIXED = dict(max_blocks_per_request=0, use_async_batching=False)


@dataclass(frozen=True)
class PagedPlan:
    """The paged cache transformers will build, and whether the longest trace fits in it."""

    device: str
    free_bytes: int  # free after the weights
    memory_share: float  # max_memory_percent
    page_size: int
    max_batch_tokens: int
    max_requests: int  # per batch: min(requests, 1024), as transformers' workload hints give it
    num_blocks: int  # blocks of page_size tokens (every layer)
    block_bytes: int
    attention: str
    longest_prompt: int
    max_new_tokens: int
    requests: int
    weight_bytes: int = 0  # counted before a model loads; 0 at load (already in free_bytes)

    @property
    def cache_tokens(self) -> int:
        return self.num_blocks * self.page_size

    @property
    def trace_blocks(self) -> int:
        return -(-(self.longest_prompt + self.max_new_tokens) // self.page_size)

    @property
    def fits(self) -> bool:
        return self.trace_blocks <= self.num_blocks

    @property
    def fitting_max_new_tokens(self) -> int:
        """The largest max_new_tokens whose longest trace fits (0: not even the prompt)."""
        return max(self.cache_tokens - self.longest_prompt, 0)

    def config_kwargs(self) -> dict:
        """`ContinuousBatchingConfig` arguments: the cache as planned, attention as loaded."""
        return dict(page_size=self.page_size, num_blocks=self.num_blocks, max_batch_tokens=self.max_batch_tokens,
                    max_memory_percent=self.memory_share, max_requests_per_batch=self.max_requests,
                    auto_switch_to_flash=False, **FIXED)

    def describe(self) -> str:
        weights = f", weights {fmt_bytes(self.weight_bytes)}" if self.weight_bytes else ""
        return (f"cb paged cache on {self.device} ({self.attention} attention): {fmt_bytes(self.free_bytes)} free "
                f"after the weights{weights}, {self.memory_share:.0%} of it for the cache and its activations, a batch "
                f"reserve of {self.max_batch_tokens:,} tokens; {self.num_blocks} blocks of {self.page_size} tokens "
                f"= {self.cache_tokens:,} tokens ({fmt_bytes(self.num_blocks * self.block_bytes)}); the longest trace "
                f"({self.longest_prompt} prompt + {self.max_new_tokens:,} new tokens) takes {self.trace_blocks} "
                f"blocks; {self.requests} requests")

    def refusal(self, key: str, quantized: bool) -> str:
        nf4 = "" if quantized or self.weight_bytes < GiB else ", generation.quantization=nf4"  # frees weights only
        return (f"{key.rsplit('.', 1)[-1]}={self.max_new_tokens:,}: the longest trace ({self.longest_prompt} prompt + "
                f"{self.max_new_tokens:,} new tokens) needs {self.trace_blocks} blocks of {self.page_size} tokens of "
                f"cb's paged cache, which holds {self.num_blocks} ({self.cache_tokens:,} tokens) on {self.device}: "
                f"{fmt_bytes(self.free_bytes)} free after {fmt_bytes(self.weight_bytes)} of weights, "
                f"{self.memory_share:.0%} of it less a batch reserve of {self.max_batch_tokens:,} tokens and SDPA's "
                f"read-back and mask (transformers' sizing); set {key}<={self.fitting_max_new_tokens}{nf4} or use a "
                "device with more free memory")


def memory_share(device_type: str, do_sample: bool) -> float:
    """transformers' own rule (`resolve_max_memory_percent`): 0.6 on the CPU, else 0.8 with a logits processor
    (sampling: temperature, top-p/k) and 0.9 without."""
    import torch
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching.initialization import resolve_max_memory_percent

    cb = ContinuousBatchingConfig()
    resolve_max_memory_percent(cb, has_logit_processors=do_sample, device=torch.device(device_type))
    return float(cb.max_memory_percent)


def hf_config(config: Any):
    """A transformers config (what the handler reads) from a checkpoint's config dict, attention set to SDPA."""
    from transformers import AutoConfig, PretrainedConfig

    if not isinstance(config, Mapping):
        config = config.to_dict()
    values = {k: v for k, v in dict(config).items() if k not in ("architectures", "transformers_version")}
    try:
        out = AutoConfig.for_model(**values)
    except (ValueError, KeyError, TypeError):
        out = PretrainedConfig(**{k: v for k, v in values.items() if k != "model_type"})
    out = out.get_text_config()
    out._attn_implementation = ATTENTION
    return out


def plan_paged_cache(config: Any, *, dtype: str, device: str, free_bytes: int, prompt_tokens: Sequence[int],
                     max_new_tokens: int, samples: int = 1, do_sample: bool = True, weight_bytes: int = 0,
                     supports_logits_to_keep: bool = True, page_size: int = PAGE_SIZE) -> PagedPlan:
    """The cache transformers builds from `free_bytes` (before the weights: `weight_bytes` is subtracted) for these
    requests; `fits` says whether the longest trace fits."""
    import torch
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching import cache as paged

    cfg = hf_config(config)
    device_type = str(device).split(":")[0]
    share = memory_share(device_type, do_sample)
    lengths = list(prompt_tokens) or [0]
    requests = len(lengths) * samples
    every = sum(-(-(n + max_new_tokens) // page_size) for n in lengths) * samples + 1  # all requests at once
    batch = 8192 if device_type != "cpu" else min(8192, sum(lengths) * samples + requests)
    cb = ContinuousBatchingConfig(page_size=page_size, max_batch_tokens=batch, max_memory_percent=share,
                                  max_requests_per_batch=min(requests, 1024), **FIXED)
    geometry = _geometry(paged, cfg, cb, getattr(torch, dtype))
    after = max(free_bytes - weight_bytes, 0)
    handler = _GivenMemory.build(paged, after, cfg, cb, getattr(torch, dtype), geometry, supports_logits_to_keep)
    try:
        _, sectors = handler.infer_max_batch_tokens_and_num_sectors()
    except (MemoryError, ValueError):
        sectors = 0
    bytes_per_sector, _, block_bytes = geometry
    blocks = min(sectors * bytes_per_sector // block_bytes, every)
    return PagedPlan(device=str(device), free_bytes=after, memory_share=share, page_size=page_size,
                     max_batch_tokens=batch, max_requests=min(requests, 1024), num_blocks=blocks,
                     block_bytes=block_bytes, attention=ATTENTION, longest_prompt=max(lengths),
                     max_new_tokens=max_new_tokens, requests=requests, weight_bytes=weight_bytes)


def _geometry(paged, cfg, cb, dtype) -> tuple[int, int, int]:
    """(bytes per sector, tokens per sector, bytes per block) as `PagedAttentionCache.__init__` computes them."""
    from transformers.generation.continuous_batching.utils import find_num_key_value_heads

    allocators = [paged.ATTN_TYPE_TO_ALLOCATOR[kind](
        index=i, layer_indices=layers, num_key_value_heads=find_num_key_value_heads(cfg), config=cfg,
        cache_dtype=dtype, page_size=cb.page_size, allow_block_sharing=cb.allow_block_sharing)
        for i, (kind, layers) in enumerate(paged.group_layers_by_attn_type(cfg).items())]
    per_sector = math.lcm(*(a.bytes_per_block for a in allocators), 128)
    tokens = max((per_sector // a.bytes_per_block) * a.tokens_per_page for a in allocators)
    return per_sector, tokens, sum(a.bytes_per_block for a in allocators)


class _GivenMemory:
    """transformers' `PagedAttentionMemoryHandler` with the free memory given instead of measured."""

    @staticmethod
    def build(paged, free: int, cfg, cb, dtype, geometry, logits_to_keep: bool):
        class Given(paged.PagedAttentionMemoryHandler):
            def get_available_memory(self) -> int:
                return int(free * self.cb_config.max_memory_percent)

        per_sector, tokens, block = geometry
        return Given(config=cfg, cb_config=cb, dtype=dtype, bytes_per_sector=per_sector, tokens_per_sector=tokens,
                     bytes_per_block=block, attn_types=list(paged.group_layers_by_attn_type(cfg)),
                     model_supports_logits_to_keep=logits_to_keep)


def check_paged(plan: PagedPlan, key: str, quantized: bool) -> PagedPlan:
    """`plan`, or a ConfigError naming `key` when its longest trace cannot fit."""
    if not plan.fits:
        raise ConfigError(plan.refusal(key, quantized))
    return plan
