"""Stage 1, generate: batched generation over chat-formatted prompts.

Used twice: the thinking checkpoint answering the training prompts (its raw outputs become
labels), and both checkpoints answering the evaluation set. Stages talk to a small
`GenerationBackend` (Hugging Face `generate` here; a vLLM backend can slot in behind the same
two methods without touching the loop), chosen by `generation.backend`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from tqdm.auto import tqdm

from thinkswitch.config import SamplingConfig
from thinkswitch.io import write_jsonl

log = logging.getLogger(__name__)


def chat_prompt(tokenizer, user: str, system: Optional[str] = None) -> str:
    """The prompt text the model sees: its own chat template with the generation prompt."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def sampling_kwargs(sampling: SamplingConfig) -> dict:
    kwargs = {"max_new_tokens": sampling.max_new_tokens, "do_sample": sampling.do_sample}
    if sampling.do_sample:
        for key in ("temperature", "top_p", "top_k", "min_p"):
            if getattr(sampling, key) is not None:
                kwargs[key] = getattr(sampling, key)
    else:  # greedy: unset the checkpoint's sampling defaults so transformers does not warn
        kwargs.update(temperature=None, top_p=None, top_k=None, min_p=None)
    return kwargs


def _eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    ids.add(tokenizer.eos_token_id)
    return ids


def generate_texts(model, tokenizer, prompts: Sequence[str], sampling: SamplingConfig, batch_size: int,
                   seed: int, desc: str = "generate") -> list[dict]:
    """Generate one completion per prompt (already chat-formatted).

    Returns, per prompt, `output` (decoded up to the first EOS, special tokens such as `</think>`
    kept), `tokens` (generated tokens including the EOS) and `stopped` (False when cut off by
    `max_new_tokens`). Prompts are batched by length; results come back in input order.
    """
    import torch

    torch.manual_seed(seed)
    eos_ids = _eos_ids(model, tokenizer)
    drop = {t for t in tokenizer.all_special_tokens if t not in ("<think>", "</think>")}
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Optional[dict]] = [None] * len(prompts)
    kwargs = sampling_kwargs(sampling)
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", leave=False)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            out = model.generate(**enc, **kwargs, pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:].tolist()
            for i, ids in zip(idx, new):
                stop = next((j for j, t in enumerate(ids) if t in eos_ids), None)
                kept = ids if stop is None else ids[: stop + 1]
                text = tokenizer.decode(kept[:-1] if stop is not None else kept, skip_special_tokens=False)
                for tok in drop:
                    text = text.replace(tok, "")
                results[i] = {"output": text, "tokens": len(kept), "stopped": stop is not None}
            bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


class GenerationBackend(Protocol):
    """What the stages need from a generator loaded with one checkpoint."""

    tokenizer: Any  # renders the chat template

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig, seed: int, desc: str) -> list[dict]:
        """One completion per chat-formatted prompt: `output`, `tokens`, `stopped` (see generate_texts)."""
        ...


class HFBackend:
    """Batched `model.generate` of Hugging Face transformers."""

    def __init__(self, model, tokenizer, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @classmethod
    def load(cls, path: str, model_cfg, device, batch_size: int) -> "HFBackend":
        from thinkswitch.models import load_model, load_tokenizer

        return cls(load_model(path, model_cfg, device), load_tokenizer(path, model_cfg), batch_size)

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig, seed: int, desc: str) -> list[dict]:
        return generate_texts(self.model, self.tokenizer, prompts, sampling, self.batch_size, seed, desc)


# "module:Class" entries are imported when used (vllm_backend never imports vLLM itself)
BACKENDS = {"hf": HFBackend, "vllm": "thinkswitch.vllm_backend:VLLMBackend"}


def load_backend(name: str, path: str, model_cfg, device, batch_size: int, gen_cfg=None) -> GenerationBackend:
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise ValueError(f"generation.backend: unknown backend {name!r}; known: {sorted(BACKENDS)}") from None
    if isinstance(backend, str):
        import importlib

        module, _, attr = backend.partition(":")
        return getattr(importlib.import_module(module), attr).load(path, model_cfg=model_cfg, device=device,
                                                                   gen_cfg=gen_cfg)
    return backend.load(path, model_cfg, device, batch_size)


def generate_labels(backend: GenerationBackend, examples: Sequence[dict], sampling: SamplingConfig,
                    samples_per_prompt: int, system_prompt: Optional[str], seed: int, out: Path) -> dict:
    """The thinking checkpoint answers the training prompts; raw outputs are saved to `out` (JSONL).

    Gold answers are never read here: the thinking model's outputs are the only labels.
    """
    t0 = time.perf_counter()
    rows = [(ex, s) for ex in examples for s in range(samples_per_prompt)]
    prompts = [chat_prompt(backend.tokenizer, ex["prompt"], system_prompt) for ex, _ in rows]
    gens = backend.generate(prompts, sampling, seed, "generate labels")
    write_jsonl(out, [{"id": ex["id"], "sample": s, "prompt": ex["prompt"], **g} for (ex, s), g in zip(rows, gens)])
    seconds = time.perf_counter() - t0
    tokens = sum(g["tokens"] for g in gens)
    log.info("generate: %d outputs, %.1f tokens each, %.0f tokens/s", len(gens), tokens / max(len(gens), 1),
             tokens / max(seconds, 1e-9))
    return {"generate/outputs": len(gens), "generate/tokens_per_output": tokens / max(len(gens), 1),
            "generate/seconds": seconds}
