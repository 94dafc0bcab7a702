"""`generation.backend=cb`: continuous batching in this process (transformers' `ContinuousBatchingManager`).

The checkpoint is loaded with SDPA attention, kept as loaded (transformers' switch to a flash kernel, fetched from
the hub where it can be, is off), which the manager runs over a paged KV cache; requests take token ids, share a
paged KV cache sized explicitly as transformers sizes it (`thinkswitch.engines.paged_cache`: planned at start, sized
again on the free memory at load), and a finished request's slot is refilled at
once, so ragged generations (long reasoning traces beside short ones) do not wait for the longest of a static
batch, and no row reserves KV for `max_new_tokens` it does not use. Each request is returned as it finishes:
`on_batch` gets it then (the stage's partial file fills prompt by prompt; a killed stage resumes with the
prompts that had not finished).

What it reproduces (tested on CPU with the testbed pair, `tests/engines/test_cb.py`):
- greedy (`do_sample: false`): the HF backend's outputs, token for token (same decoding, `engines.decoding`);
  resuming after a kill gives an uninterrupted run's outputs.
- sampled: each request's tokens are drawn from (seed, its index, the token's position) alone
  (`engines.cb_sampling`), as the vLLM engine seeds each request: the same seed, prompts, settings and machine give
  the same outputs whatever runs beside a request, another seed gives others, and a stage killed midway and
  resumed ends with an uninterrupted run's outputs. Sampled outputs differ from the HF backend's for the same seed
  (another scheme: `seeds.CB_RNG_SCHEME`). GPU kernels may add their own nondeterminism.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Mapping, Optional, Sequence

from thinkswitch.config import GenerationConfig, ModelConfig, SamplingConfig
from thinkswitch.engines.base import Results, release_model, sampling_kwargs
from thinkswitch.engines.decoding import decode, drop_tokens, eos_ids, results_from
from thinkswitch.engines.free_memory import free_memory
from thinkswitch.engines.paged_cache import ATTENTION, check_paged, plan_paged_cache

log = logging.getLogger(__name__)

def cache_config(config_class, model, ids, sampling: SamplingConfig, seed: int):
    """transformers' ContinuousBatchingConfig with the paged cache sized explicitly (`paged_cache`: transformers'
    own sizing, on the free memory measured now, the model loaded), SDPA kept (`auto_switch_to_flash=False`: no
    flash kernel from the hub in place of the engine `make gpu-check` measured). `seed` seeds torch once
    (transformers calls `torch.manual_seed(seed)` when the generation thread starts). Raises ConfigError, before
    anything is generated, when the longest trace cannot fit (the run's start-up plan refuses it earlier,
    `sizing.run_plan`)."""
    plan = check_paged(plan_paged_cache(
        model.config, dtype=str(model.dtype).removeprefix("torch."), device=str(model.device),
        free_bytes=free_memory(str(model.device)), prompt_tokens=[len(x) for x in ids],
        max_new_tokens=sampling.max_new_tokens,
        do_sample=bool(sampling.do_sample), supports_logits_to_keep=_logits_to_keep(model)),
        "model.sampling.<mode>.max_new_tokens", quantized=getattr(model, "is_loaded_in_4bit", False))
    log.info("%s", plan.describe())
    return config_class(seed=seed, **plan.config_kwargs())


def _logits_to_keep(model) -> bool:
    """Whether transformers charges the LM head per request rather than per batch token (its own test)."""
    supports = getattr(model, "_supports_logits_to_keep", None)
    return callable(supports) and bool(supports())


class CBBackend:
    """Continuous batching of transformers on one loaded checkpoint; see the module docstring."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.eos, self.drop = eos_ids(model.generation_config, tokenizer), drop_tokens(tokenizer)

    def decode(self, ids: list[int]) -> dict:
        return decode(ids, self.eos, self.tokenizer, self.drop)

    @classmethod
    def load(cls, path: str, *, model_cfg: ModelConfig, device, gen_cfg: GenerationConfig) -> "CBBackend":
        from thinkswitch.engines.models import generation_quantization, load_model, load_tokenizer, pick_dtype

        # transformers' continuous batching logs ~35 INFO lines a run (cache sizes, warm-up, each stop) through a
        # logger of its own that prints to stderr; its warnings and errors still show
        logging.getLogger("ContinuousBatchingLogger").setLevel(logging.WARNING)
        quant = generation_quantization(gen_cfg.quantization, pick_dtype(model_cfg.dtype, device))
        model = load_model(path, model_cfg, device, quant, attn_implementation=ATTENTION)
        log.info("cb engine: %s attention over a paged cache (transformers' switch to a flash kernel off)",
                 model.config._attn_implementation)
        return cls(model, load_tokenizer(path, model_cfg))

    def generation_config(self, sampling: SamplingConfig):
        """The checkpoint's generation config with `sampling` over it (as `model.generate` would combine them)."""
        config = copy.deepcopy(self.model.generation_config)
        config.update(**sampling_kwargs(sampling))
        config.eos_token_id = sorted(self.eos)
        config.pad_token_id = self.tokenizer.pad_token_id
        config.num_return_sequences = 1  # n samples are n requests (index i * n + s)
        return config

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig, *, seed: int, n: int = 1,
                 desc: str = "generate", on_batch: Optional[Callable[[Results], None]] = None,
                 done: Optional[Mapping[int, dict]] = None) -> list[dict]:
        """See `GenerationBackend.generate`; each finished request goes to `on_batch` alone."""
        total = len(prompts) * n
        results = results_from(done, total)
        todo = [i for i in range(total) if results[i] is None]
        if todo:
            ids = {i: self.tokenizer(prompts[i // n], add_special_tokens=False)["input_ids"] for i in todo}
            self._run(ids, sampling, seed, desc, results, on_batch, done=total - len(todo))
        return results  # type: ignore[return-value]

    def _run(self, ids: dict[int, list[int]], sampling: SamplingConfig, seed: int, desc: str,
             results: list[Optional[dict]], on_batch: Optional[Callable[[Results], None]], done: int) -> None:
        """Queue every request, then start the generation thread and collect each request as it finishes."""
        from tqdm.auto import tqdm
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        from transformers.generation.continuous_batching.continuous_api import WorkloadHints

        hints = WorkloadHints(max_prompt_length=max(len(v) for v in ids.values()),
                              max_generated_length=sampling.max_new_tokens, num_requests=len(ids))
        config = self.generation_config(sampling)
        min_new = min(config.min_new_tokens or 0, sampling.max_new_tokens)
        config.min_new_tokens = None  # transformers would drop its processor for this one; `hold_eos` replaces it
        manager = self.model.init_continuous_batching(generation_config=config,
                                                      continuous_batching_config=cache_config(
                                                          ContinuousBatchingConfig, self.model, ids.values(),
                                                          sampling, seed),
                                                      workload_hints=hints)
        if min_new > 0:  # the checkpoint's min_new_tokens, as `generate` honours it
            from thinkswitch.engines.cb_sampling import hold_eos

            hold_eos(manager, self.model, min_new, self.eos)
        if sampling.do_sample:
            from thinkswitch.engines.cb_sampling import seed_requests

            seed_requests(manager, seed)
        for i, input_ids in ids.items():
            manager.add_request(input_ids, request_id=str(i), max_new_tokens=sampling.max_new_tokens,
                                eos_token_id=sorted(self.eos))
        bar = tqdm(total=len(results), initial=done, desc=desc, unit="answer", leave=False)
        failed = True
        manager.start()
        try:
            _collect(manager, set(ids), results, self.decode, on_batch, bar)
            failed = False
        finally:
            bar.close()
            manager.stop(block=True, timeout=None if not failed else 10, hard_stop=failed)
            manager.destroy()

    def close(self) -> None:
        release_model(self)


def _collect(manager, pending: set[int], results: list[Optional[dict]], decode_ids: Callable[[list[int]], dict],
             on_batch: Optional[Callable[[Results], None]], bar) -> None:
    """Each finished request, decoded, into `results` and to `on_batch`, until none is pending."""
    while pending:
        out = manager.get_result(timeout=1)
        if out is None:
            if not manager.is_running():
                error = getattr(manager.background_thread_status, "fatal_error", None)
                raise RuntimeError(f"continuous batching stopped with {len(pending)} requests unfinished: {error}")
            continue
        if not out.is_finished():
            continue
        if out.error is not None:
            raise RuntimeError(f"continuous batching: request {out.request_id} failed: {out.error}")
        i = int(out.request_id)
        results[i] = decode_ids(out.generated_tokens)
        pending.discard(i)
        if on_batch is not None:
            on_batch({i: results[i]})
        bar.update(1)
