"""`generation.backend=cb`, sampled: each request draws its tokens from (seed, its index, the token's position)
alone, as the vLLM engine seeds each request, so a resumed stage ends with what an uninterrupted one would have.

transformers' continuous batching samples every request of a step from one torch random stream
(`torch.multinomial` over the batch), so a request's tokens depend on which requests run beside it. `seed_requests`
appends `SeededSampler` to the manager's logits processors: it picks each request's next token by the Gumbel-max
trick (argmax of log-probabilities plus Gumbel noise), with the noise of every vocabulary entry computed by an
integer hash of (the row's seed, the entry) on the device (no host round trip: capturable in a CUDA graph), and
hands transformers' sampler a distribution that holds only that token. The row's seed is
`seeds.token_seed(seed, request index, how many tokens the request has been given)`, counted on the host as
transformers prepares each step. Greedy decoding is left as it was (`argmax`).

`hold_eos` appends `HoldEOS`, the checkpoint's `min_new_tokens` for greedy and sampled runs alike (transformers
drops `generate`'s processor for it from a continuous batching run).
"""

from __future__ import annotations

from typing import Iterable

import torch
from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingLogitsProcessor

from thinkswitch.engines.seeds import token_seed

_MASK = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding values below 2**32 (products wrap; the mask keeps the
    low 32 bits, which wrapping leaves as they are)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK
    return x ^ (x >> 16)


def gumbel_choice(scores: torch.Tensor, row_seeds: torch.Tensor) -> torch.Tensor:
    """The token each row of `scores` ([rows, vocab], logits after the warpers) draws from softmax(scores), with
    random numbers that depend on the row's seed only: argmax(log softmax + Gumbel(hash(seed, entry)))."""
    vocab = torch.arange(scores.size(-1), device=scores.device, dtype=torch.int64)
    mixed = (row_seeds.to(torch.int64).unsqueeze(-1) * 0x9E3779B1 + vocab * 0x7FEB352D) & _MASK
    u = (_hash32(_hash32(mixed)).to(torch.float64) + 0.5) / 2.0**32  # uniform in (0, 1)
    gumbel = -torch.log(-torch.log(u))
    return torch.argmax(torch.log_softmax(scores.to(torch.float64), dim=-1) + gumbel, dim=-1)


class _PerRequest(ContinuousBatchingLogitsProcessor):
    """A logits processor whose per-row argument depends on the request and how many tokens it has been given,
    counted on the host as transformers prepares each step (`row_value`)."""

    supported_kwargs: dict[str, type] = {}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self):
        self.given: dict[str, int] = {}  # tokens each request has been given

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def row_value(self, request_id: str, step: int) -> int:
        raise NotImplementedError

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        values = []
        for request in requests_with_new_token:
            rid = request.state.request_id
            step = self.given.get(rid, 0)
            self.given[rid] = step + 1
            values.append(self.row_value(rid, step))
        return torch.tensor(values, dtype=torch.int32, device="cpu")


def _append(manager, processor: ContinuousBatchingLogitsProcessor) -> None:
    """Add `processor` last to the manager's logits processors. Before `manager.start()` (the batch processor takes
    the processor list when it starts)."""
    processors = manager.logit_processor
    processors.logits_processor.append(processor)
    processors.tensors_required += 1
    processors.do_processing = True


class SeededSampler(_PerRequest):
    """The last logits processor of a sampled continuous batching run: see the module docstring."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def row_value(self, request_id: str, step: int) -> int:
        index = int(request_id) if request_id.isdigit() else sum(request_id.encode())  # warm-up requests are named
        return token_seed(self.seed, index, step)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        chosen = gumbel_choice(scores, tensor_arg[: scores.size(0)])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, chosen.unsqueeze(-1), 0.0)  # one token left: transformers' sampler must take it


def seed_requests(manager, seed: int) -> None:
    """Make a sampled manager draw each request's tokens from (seed, request index, position): see the module
    docstring. Before `manager.start()`."""
    _append(manager, SeededSampler(seed))


class HoldEOS(_PerRequest):
    """The checkpoint's `min_new_tokens` under continuous batching: EOS masked for a request until it has been given
    `min_new_tokens` tokens, as `generate`'s MinNewTokensLengthLogitsProcessor does (transformers drops that one
    from a continuous batching run: it reads a padded batch's lengths, which a paged batch has not)."""

    def __init__(self, min_new_tokens: int, eos: Iterable[int], vocab: int, device):
        super().__init__()
        self.min_new_tokens, self.eos = min_new_tokens, sorted(eos)
        self._mask = self._eos_mask(vocab, device)  # built here: no host copy while a step runs (or is captured)

    def _eos_mask(self, vocab: int, device) -> torch.Tensor:
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[[i for i in self.eos if 0 <= i < vocab]] = True
        return mask.to(device)

    def row_value(self, request_id: str, step: int) -> int:
        return int(step < self.min_new_tokens)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        if self._mask.device != scores.device or self._mask.numel() != scores.size(-1):  # not as the model said
            self._mask = self._eos_mask(scores.size(-1), scores.device)
        held = tensor_arg[: scores.size(0)].to(torch.bool).unsqueeze(-1)
        return scores.masked_fill(held & self._mask, float("-inf"))


def hold_eos(manager, model, min_new_tokens: int, eos: Iterable[int]) -> None:
    """Hold EOS off each request's first `min_new_tokens` tokens (`HoldEOS`). Before `seed_requests` (which leaves
    one token per row) and before `manager.start()`."""
    vocab = model.get_output_embeddings().out_features  # the logits' width (a 4-bit LM head keeps its own)
    _append(manager, HoldEOS(min_new_tokens, eos, vocab, model.device))
