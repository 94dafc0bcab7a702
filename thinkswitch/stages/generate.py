"""Stage 1, generate: the thinking checkpoint answers the training prompts (its raw outputs become labels)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from thinkswitch.config import SamplingConfig
from thinkswitch.engines.chat import chat_prompt
from thinkswitch.engines.hf import RNG_SCHEME, Generator
from thinkswitch.store.cache import checkpoint_id, digest
from thinkswitch.store.io import write_jsonl
from thinkswitch.store.partial import PartialResults, generate_resumable

log = logging.getLogger(__name__)


def partial_key(stage: str, generator, checkpoint: str, prompts: Sequence[str], sampling: SamplingConfig,
                samples: int, seed: int) -> str:
    """What a partial file's results depend on: the checkpoint (its files), the chat-formatted prompts, sampling,
    samples, the seed and the generator's settings (`Generator.settings`)."""
    model = getattr(generator, "model", None)
    settings = generator.settings() if hasattr(generator, "settings") else (type(generator).__name__,)
    return digest("partial", stage, checkpoint_id(checkpoint, getattr(model, "revision", None)), list(prompts),
                  sampling, samples, seed, *settings)


def cache_key(*, thinking_id: str, examples: Sequence[dict], sampling: SamplingConfig, samples: int, seed: int,
              context: tuple) -> str:
    """What determines the generations: the checkpoint, the prompts, sampling, k, the seed and the context
    (`loop.stage_context`: package version, device, dtype, system prompt, backend)."""
    return digest("generate", thinking_id, list(examples), sampling, samples, seed, RNG_SCHEME, *context)


def generate_labels(*, generator: Generator, checkpoint: str, examples: Sequence[dict], sampling: SamplingConfig,
                    samples: int, system_prompt: Optional[str], seed: int, out: Path) -> dict:
    """The thinking checkpoint answers the training prompts `samples` times each; raw outputs go to `out`.

    Finished batches are kept in `out`'s partial file (`thinkswitch.store.partial`) as they come: a rerun after a
    crash generates only what is missing. Gold answers are never read here: the thinking model's outputs are
    the only labels.
    """
    t0 = time.perf_counter()
    with generator.open(checkpoint) as backend:
        prompts = [chat_prompt(backend.tokenizer, ex["prompt"], system_prompt) for ex in examples]
        partial = PartialResults(out, partial_key("generate", generator, checkpoint, prompts, sampling, samples,
                                                  seed))
        resumed = len(partial.done)
        gens = generate_resumable(backend, prompts, sampling, seed=seed, n=samples, desc="generate labels",
                                  partial=partial)
    rows = [(ex, s) for ex in examples for s in range(samples)]
    write_jsonl(out, [{"id": ex["id"], "sample": s, "prompt": ex["prompt"], **g} for (ex, s), g in zip(rows, gens)])
    partial.remove()
    seconds = time.perf_counter() - t0
    tokens = sum(g["tokens"] for g in gens)
    log.info("generate: %d outputs, %.1f tokens each, %.0f tokens/s", len(gens), tokens / max(len(gens), 1),
             tokens / max(seconds, 1e-9))
    return {"generate/outputs": len(gens), "generate/tokens_per_output": tokens / max(len(gens), 1),
            "generate/seconds": seconds, "generate/resumed_outputs": resumed}  # kept from an interrupted run
