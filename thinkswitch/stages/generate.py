"""Stage 1, generate: the thinking checkpoint answers the training prompts (its raw outputs become labels)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from thinkswitch.config import SamplingConfig
from thinkswitch.engines.base import Generator
from thinkswitch.stages.answer import answer_prompts
from thinkswitch.stages.inputs import Artifact, Engine, output_path
from thinkswitch.store.io import write_jsonl

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


def generate_labels(inputs: GenerateInputs, *, generator: Generator) -> dict:
    """The thinking checkpoint answers the training prompts `samples` times each; raw outputs go to `inputs.out`.

    Resumable (`stages.answer.answer_prompts`): a rerun after a crash generates only what is missing. Gold answers are
    never read here: the thinking model's outputs are the only labels.
    """
    t0 = time.perf_counter()
    answers = answer_prompts(inputs, generator=generator, desc="generate labels")
    gens = answers.rows
    rows = [(ex, s) for ex in inputs.examples for s in range(inputs.samples)]
    write_jsonl(inputs.out, [{"id": ex["id"], "sample": s, "prompt": ex["prompt"], **g}
                             for (ex, s), g in zip(rows, gens)])
    answers.written()
    seconds = time.perf_counter() - t0
    tokens = sum(g["tokens"] for g in gens)
    log.info("generate: %d outputs, %.1f tokens each, %.0f tokens/s", len(gens), tokens / max(len(gens), 1),
             tokens / max(seconds, 1e-9))
    return {"generate/outputs": len(gens), "generate/tokens_per_output": tokens / max(len(gens), 1),
            "generate/seconds": seconds, "generate/resumed_outputs": answers.resumed}  # kept from an interrupted run
