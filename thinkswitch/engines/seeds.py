"""How the engines draw random numbers, and the names of those schemes (part of every generation's keys)."""

from __future__ import annotations

import hashlib

from thinkswitch.config import Backend

# How random numbers are drawn (part of every generation's stage-cache key): each batch seeds torch from
# (seed, its first position), see `batch_seed`. Outputs of sampled generation differ from those of
# thinkswitch before it, which seeded once per call.
RNG_SCHEME = "batch-seed-v1"
# vLLM: each request seeds its own generator from a hash of (seed, its index) (`batch_seed(seed, i)`); before,
# from seed + i, so the requests of runs whose seeds differ by k drew shifted copies of one another's streams.
VLLM_RNG_SCHEME = "request-hash-v1"
# Continuous batching: each request's tokens draw from (seed, its index, the token's position) (`token_seed`,
# `engines.cb_sampling`); before, one torch stream for every request of a step, so a resumed stage drew anew.
CB_RNG_SCHEME = "cb-token-hash-v1"


def rng_scheme(backend: str) -> str:
    """How the engine `backend` (as resolved) draws its random numbers: part of its results' keys."""
    return {Backend.vllm: VLLM_RNG_SCHEME, Backend.cb: CB_RNG_SCHEME}.get(backend, RNG_SCHEME)


def batch_seed(seed: int, first: int) -> int:
    """The torch seed of the batch that starts at position `first` of the length order: a batch's random numbers
    depend on (seed, where it starts) only, not on the batches before it, so a resumed run draws what an
    uninterrupted one would have."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{first}".encode()).digest()[:8], "little") >> 1


def request_seeds(seed: int, indices) -> list[int]:
    """vLLM: the seed of each request (prompt index i: `batch_seed(seed, i)`)."""
    return [batch_seed(seed, i) for i in indices]


def token_seed(seed: int, index: int, step: int) -> int:
    """Continuous batching: the 31-bit seed of request `index`'s token number `step` (from 0)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}:{step}".encode()).digest()[:4], "little") >> 1
