"""Answering prompts, as generate and evaluate both do: a checkpoint answers each example `samples` times,
resumably.

`answer_prompts(inputs, generator=..., desc=...)` opens the checkpoint, renders each example's prompt in its
chat format and generates, keeping every finished batch in the output's partial file
(`thinkswitch.store.partial`); a rerun after a crash generates only what is missing, with the batching the file
was begun with. The stage writes its output, then calls `Answers.written()`, which removes the partial file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Protocol

from thinkswitch.config import SamplingConfig
from thinkswitch.engines.base import Generator
from thinkswitch.engines.chat import chat_prompt
from thinkswitch.stages.inputs import Artifact, stage_key
from thinkswitch.store.partial import PartialResults, generate_resumable

log = logging.getLogger(__name__)


class Prompted(Protocol):
    """The inputs of a stage that answers prompts (`GenerateInputs`, `EvaluateInputs`)."""

    checkpoint: Artifact
    examples: tuple  # {"id", "prompt", ...}
    sampling: SamplingConfig
    samples: int
    system_prompt: Optional[str]
    seed: int
    out: Path


@dataclass(frozen=True)
class Answers:
    """One answer per (example, sample), example by example: `{"output", "tokens", "stopped"}` each."""

    rows: list[dict]
    resumed: int  # answers kept from an interrupted run (its partial file)
    partial: PartialResults

    def written(self) -> None:
        """The stage's output is written: the partial file is no longer needed."""
        self.partial.remove()


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


def answer_prompts(inputs: Prompted, *, generator: Generator, desc: str) -> Answers:
    """The checkpoint's answers to `inputs.examples`, `inputs.samples` each (see the module's docstring)."""
    partial, generator = resumable(generator, inputs.out, inputs)
    resumed = len(partial.done)
    with generator.open(inputs.checkpoint.path) as backend:
        prompts = [chat_prompt(backend.tokenizer, ex["prompt"], inputs.system_prompt) for ex in inputs.examples]
        rows = generate_resumable(backend, prompts, inputs.sampling, seed=inputs.seed, n=inputs.samples, desc=desc,
                                  partial=partial)
    return Answers(rows, resumed, partial)
