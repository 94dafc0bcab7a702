"""`generation.backend=hf`: Hugging Face `generate` in static batches, batched by prompt length."""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Optional, Sequence

from tqdm.auto import tqdm

from thinkswitch.config import GenerationConfig, ModelConfig, SamplingConfig
from thinkswitch.engines.base import Results, _release_cuda, prompt_token_counts, release_model, sampling_kwargs
from thinkswitch.engines.decoding import decode, drop_tokens, eos_ids, results_from
from thinkswitch.engines.seeds import batch_seed

log = logging.getLogger(__name__)


def next_batch(order: Sequence[int], start: int, rows: int, lengths: Optional[Sequence[int]] = None,
               max_new_tokens: int = 0, token_budget: Optional[int] = None) -> list[int]:
    """The next batch: `order[start:]` up to `rows` entries and, with a `token_budget`, no more than keeps
    rows x (longest prompt + max_new_tokens) <= token_budget (the KV cache a left-padded batch reserves).
    At least one entry: a prompt over the budget alone runs alone (the memory plan refuses such runs)."""
    if token_budget is None or lengths is None:
        return list(order[start : start + rows])
    batch: list[int] = []
    longest = 0
    for i in order[start : start + rows]:
        wider = max(longest, lengths[i])
        if batch and (len(batch) + 1) * (wider + max_new_tokens) > token_budget:
            break
        batch.append(i)
        longest = wider
    return batch


def generate_texts(model, tokenizer, prompts: Sequence[str], sampling: SamplingConfig, batch_size: int,
                   seed: int, desc: str = "generate", *, token_budget: Optional[int] = None,
                   on_batch: Optional[Callable[[Results], None]] = None,
                   done: Optional[Mapping[int, dict]] = None) -> list[dict]:
    """One completion per prompt (already chat-formatted), in input order (see `GenerationBackend.generate`).

    Prompts are batched by length (less padding). `batch_size` bounds the rows of a batch; `token_budget`
    (KV tokens, `memory.GenerationPlan.token_budget`) also bounds rows x (longest prompt of the batch +
    max_new_tokens). Without it, or where it does not bind, the batches (and so the outputs for a seed) are
    those of `batch_size` alone. Each batch seeds torch with `batch_seed(seed, its first position)`.
    A batch that runs out of CUDA memory is split in half and retried, and later batches are capped at that
    half; finished batches are kept. A single prompt that runs out of memory raises.

    `done` (results by prompt index, from an interrupted call: whole batches, a prefix of the length order) are
    returned as given; the rest is batched from where they end, as an uninterrupted call would have batched it.
    `on_batch` gets each finished batch's results by index.
    """
    import torch

    eos, drop = eos_ids(model.generation_config, tokenizer), drop_tokens(tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    position = {i: p for p, i in enumerate(order)}
    results = results_from(done, len(prompts))
    todo = [i for i in order if results[i] is None]
    lengths = prompt_token_counts(tokenizer, prompts) if token_budget is not None and prompts else None
    kwargs = sampling_kwargs(sampling)
    rows, start, retry = batch_size, 0, []  # retry: halves of a batch that ran out of memory (a stack)
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=desc, unit="prompt", leave=False)
    with torch.inference_mode():
        while retry or start < len(todo):
            if retry:
                idx = retry.pop()
            else:
                idx = next_batch(todo, start, rows, lengths, sampling.max_new_tokens, token_budget)
                start += len(idx)
            new = _generate_batch(model, tokenizer, [prompts[i] for i in idx], kwargs,
                                  batch_seed(seed, position[idx[0]]), desc)
            if new is None:  # out of memory: split
                half = (len(idx) + 1) // 2
                retry += [idx[half:], idx[:half]]  # a stack: the first half runs next
                rows = min(rows, half)
                log.warning("%s: out of memory on a batch of %d; retrying it in halves, later batches of at most %d",
                            desc, len(idx), rows)
                continue
            for i, ids in zip(idx, new):
                results[i] = decode(ids, eos, tokenizer, drop)
            if on_batch is not None:
                on_batch({i: results[i] for i in idx})
            bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def _generate_batch(model, tokenizer, texts: list[str], kwargs: dict, seed: int, desc: str) -> Optional[list]:
    """The new token ids of one batch, or None where it ran out of CUDA memory (its memory released); a single
    prompt that runs out of memory raises."""
    import torch

    try:
        torch.manual_seed(seed)
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**enc, **kwargs, pad_token_id=tokenizer.pad_token_id)
        return out[:, enc["input_ids"].shape[1]:].tolist()
    except torch.OutOfMemoryError:
        if len(texts) == 1:
            log.error("%s: out of memory on a single prompt (%d characters)", desc, len(texts[0]))
            raise
    enc = out = None  # out of the except clause (its traceback dropped), the batch's tensors go before the cache
    _release_cuda()
    return None


class HFBackend:
    """Batched `model.generate` of Hugging Face transformers."""

    def __init__(self, model, tokenizer, batch_size: int, token_budget: Optional[int] = None):
        self.model, self.tokenizer, self.batch_size, self.token_budget = model, tokenizer, batch_size, token_budget

    @classmethod
    def load(cls, path: str, *, model_cfg: ModelConfig, device, gen_cfg: GenerationConfig) -> "HFBackend":
        from thinkswitch.engines.models import generation_quantization, load_model, load_tokenizer, pick_dtype

        quant = generation_quantization(gen_cfg.quantization, pick_dtype(model_cfg.dtype, device))
        return cls(load_model(path, model_cfg, device, quant), load_tokenizer(path, model_cfg), gen_cfg.batch_size)

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig, *, seed: int, n: int = 1,
                 desc: str = "generate", on_batch: Optional[Callable[[Results], None]] = None,
                 done: Optional[Mapping[int, dict]] = None) -> list[dict]:
        repeated = [p for p in prompts for _ in range(n)]
        return generate_texts(self.model, self.tokenizer, repeated, sampling, self.batch_size, seed, desc,
                              token_budget=self.token_budget, on_batch=on_batch, done=done)

    def close(self) -> None:
        release_model(self)
