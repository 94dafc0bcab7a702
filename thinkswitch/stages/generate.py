"""Stage 1, generate: the thinking checkpoint answers the training prompts (its raw outputs become labels)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from thinkswitch.config import SamplingConfig
from thinkswitch.engines.base import Generator
from thinkswitch.engines.chat import chat_prompt
from thinkswitch.stages.inputs import Artifact, Engine, output_path, stage_key
from thinkswitch.store.io import write_jsonl
from thinkswitch.store.partial import PartialResults, generate_resumable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateInputs:
    """What the generated labels depend on (their keys: `stages.inputs.stage_key`)."""

    checkpoint: Artifact  # the thinking checkpoint
    examples: tuple  # the training prompts ({"id", "prompt", ...}); their answers are never read
    sampling: SamplingConfig
    samples: int  # generation.samples_per_prompt
    system_prompt: Optional[str]
    seed: int
    engine: Engine
    out: Path = output_path()


def batching_of(generator) -> dict:
    """How `generator` batches (recorded in a partial file; a resume reuses it): the HF backend's rows per batch and
    KV token budget (the memory plan's, from the free memory at start)."""
    generation = getattr(generator, "generation", None)
    return {"batch_size": getattr(generation, "batch_size", None), "token_budget": getattr(generator, "token_budget",
                                                                                            None)}


def resumable(generator, out: Path, inputs) -> tuple[PartialResults, object]:
    """`out`'s partial file (keyed by `inputs`) and the generator to finish it with: one batching as the run that
    began it, so that the answers still to come are what an uninterrupted run would have drawn."""
    partial = PartialResults(out, stage_key(inputs, "partial"), batching_of(generator))
    recorded = partial.batching or {}
    if recorded != batching_of(generator) and isinstance(generator, Generator) and recorded.get("batch_size"):
        log.info("%s: finishing with the batching it was begun with (%s; this start planned %s)", partial.path.name,
                 recorded, batching_of(generator))
        generator = replace(generator, token_budget=recorded.get("token_budget"),
                            generation=replace(generator.generation, batch_size=recorded.get("batch_size")))
    return partial, generator


def generate_labels(inputs: GenerateInputs, *, generator: Generator) -> dict:
    """The thinking checkpoint answers the training prompts `samples` times each; raw outputs go to `inputs.out`.

    Finished batches are kept in the output's partial file (`thinkswitch.store.partial`) as they come: a rerun
    after a crash generates only what is missing. Gold answers are never read here: the thinking model's outputs
    are the only labels.
    """
    t0 = time.perf_counter()
    partial, generator = resumable(generator, inputs.out, inputs)
    resumed = len(partial.done)
    with generator.open(inputs.checkpoint.path) as backend:
        prompts = [chat_prompt(backend.tokenizer, ex["prompt"], inputs.system_prompt) for ex in inputs.examples]
        gens = generate_resumable(backend, prompts, inputs.sampling, seed=inputs.seed, n=inputs.samples,
                                  desc="generate labels", partial=partial)
    rows = [(ex, s) for ex in inputs.examples for s in range(inputs.samples)]
    write_jsonl(inputs.out, [{"id": ex["id"], "sample": s, "prompt": ex["prompt"], **g}
                             for (ex, s), g in zip(rows, gens)])
    partial.remove()
    seconds = time.perf_counter() - t0
    tokens = sum(g["tokens"] for g in gens)
    log.info("generate: %d outputs, %.1f tokens each, %.0f tokens/s", len(gens), tokens / max(len(gens), 1),
             tokens / max(seconds, 1e-9))
    return {"generate/outputs": len(gens), "generate/tokens_per_output": tokens / max(len(gens), 1),
            "generate/seconds": seconds, "generate/resumed_outputs": resumed}  # kept from an interrupted run
