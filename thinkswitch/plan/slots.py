"""How many sequences each engine decodes at once on a card, by the engine's own rules, or why not one fits.

- `static` (HF generate): the run's own HF plan (`sizing.memory.plan_generation`): a batch reserves the KV cache of
  its longest prompt + `max_new_tokens` for every row.
- `continuous` (`cb`, and `auto` where it picks `cb`): transformers' own paged-cache sizing
  (`engines.paged_cache.plan_paged_cache`, the function the run checks at start), run on the card's free memory
  with the weights counted: whether the longest trace fits, and how many requests the cache holds at once.
- `vllm`: vLLM 0.32's rules: it starts only where the free memory holds `gpu_memory_utilization` x the card
  (`engines.vllm_options.startup_memory_error`); its KV pool, that share of the card's total less the weights and
  the profiling run's peak (`sizing.memory.vllm_kv_pool_bytes`), must hold one request of `max_model_len` (the
  longest prompt + its budget, as the run sets it: `run_plan.with_vllm_context`); at most `max_num_seqs` requests
  at once (vLLM's default by card, `EngineArgs._set_default_max_num_seqs_and_batched_tokens_args`).
"""

from __future__ import annotations

from thinkswitch.config import ExperimentConfig
from thinkswitch.engines.vllm_options import context_for, startup_memory_error
from thinkswitch.errors import ConfigError
from thinkswitch.sizing.cards import Card
from thinkswitch.sizing.memory import plan_generation, vllm_kv_pool_bytes
from thinkswitch.sizing.run_plan import Job, paged_cache_for
from thinkswitch.sizing.shapes import GiB, fmt_bytes, kv_bytes_per_token
from thinkswitch.sizing.weights import generation_weight_bytes


def slots_for(job: Job, engine: str, cfg: ExperimentConfig, model, card: Card, jobs: list[Job]) -> int:
    """Rows of a static batch, or a continuous engine's concurrent sequences; ConfigError when not one fits.
    `jobs`: every generation of the run (vLLM's context is the longest of them)."""
    weights = generation_weight_bytes(model.tensors, model.dtype, cfg.generation.quantization)
    kv = kv_bytes_per_token(model.config, model.dtype)
    if engine == "static":
        return plan_generation(kv_bytes_per_token=kv, prompt_tokens=job.prompt_tokens, max_new_tokens=job.max_new,
                               samples_per_prompt=job.samples, free_bytes=card.free_bytes, weight_bytes=weights,
                               batch_size=cfg.generation.batch_size, device="cuda", key=job.key,
                               quantization=cfg.generation.quantization).batch_size
    if engine == "vllm":
        return vllm_slots(job, cfg, card, weights, kv, jobs)
    return cb_slots(job, cfg, model, card, weights)


def cb_slots(job: Job, cfg: ExperimentConfig, model, card: Card, weights: int) -> int:
    """transformers' paged cache on this card (`plan_paged_cache`: the share of free memory after the weights that
    sampling or greedy decoding gets, less the batch reserve and SDPA's read-back): the refusal the run would give
    when the longest trace cannot fit, else the requests it holds at once (each at its prompt + half its budget on
    average), at most the requests of a batch."""
    if weights >= card.free_bytes:
        raise ConfigError(f"the weights need {fmt_bytes(weights)}; {fmt_bytes(card.free_bytes)} free on the card")
    plan = paged_cache_for(cfg, job, model.config, model.dtype, "cuda", card.free_bytes, weights)
    held = plan.cache_tokens // (job.longest_prompt + job.max_new // 2)
    return max(1, min(plan.max_requests, job.sequences, held))


def vllm_max_num_seqs(options: dict, card: Card) -> int:
    """`max_num_seqs` as set, else vLLM 0.32's default for its `LLM` class: 1,024 on cards of 70 GiB or more
    other than the A100, 256 below."""
    if options.get("max_num_seqs"):
        return int(options["max_num_seqs"])
    return 1024 if card.memory_bytes >= 70 * GiB and "a100" not in card.name.lower() else 256


def vllm_slots(job: Job, cfg: ExperimentConfig, card: Card, weights: int, kv: int, jobs: list[Job]) -> int:
    """vLLM's KV pool on this card, which must hold one request of `max_model_len` (vLLM refuses to start
    otherwise: "To serve at least one request with the model's max seq len"), and the requests it holds at once."""
    options = dict(cfg.generation.vllm or {})
    longest = max(jobs, key=lambda j: j.longest_prompt + j.max_new)  # its budget sets the context
    context = options.get("max_model_len") or context_for([j.request for j in jobs])  # the run's own rule
    own = options.get("kv_cache_memory_bytes")
    if isinstance(own, str):
        from thinkswitch.store.io import parse_size

        own = parse_size(own)
    utilization = float(options.get("gpu_memory_utilization") or 0.9)
    refused = startup_memory_error(card.free_bytes, card.memory_bytes, utilization)
    if refused:  # vLLM will not start: the card's free memory is below its share
        raise ConfigError(refused)
    pool = int(own) if own else vllm_kv_pool_bytes(card.memory_bytes, weights, utilization)
    if not pool:
        raise ConfigError(f"vLLM's share of the card ({utilization:g} x {fmt_bytes(card.memory_bytes)}) is used up by "
                          f"the weights ({fmt_bytes(weights)}) and its activations (2 GiB, an assumption: vLLM "
                          "measures them): no room for a KV cache; use a card with more memory")
    if context * kv > pool:
        where = ("generation.vllm.kv_cache_memory_bytes" if own else
                 f"{utilization:g} of {fmt_bytes(card.memory_bytes)} less {fmt_bytes(weights)} of weights and "
                 "2 GiB of activations (an assumption: vLLM measures it)")
        raise ConfigError(f"one request of max_model_len={context:,} (the longest prompt + its budget) needs "
                          f"{fmt_bytes(context * kv)} of KV cache; vLLM's KV pool is {fmt_bytes(pool)} ({where}); "
                          f"lower {longest.key} or use a card with more memory")
    held = pool // ((job.longest_prompt + job.max_new // 2) * kv)
    return max(1, min(vllm_max_num_seqs(options, card), job.sequences, held))
