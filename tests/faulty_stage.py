"""`python tests/faulty_stage.py <generate|evaluate> <out> <batches> [override ...]`: one multi-batch generation stage
on the testbed pair, SIGKILLed right after its `<batches>`-th batch was written to the partial file (through its test
hook). Overrides (e.g. `generation.backend=cb`) go after the defaults below.

`run_stage` is also what the tests call in-process for the uninterrupted run and for the rerun.
"""

import os
import signal
import sys
from pathlib import Path

import torch
from conftest import CACHE, compose

from thinkswitch.store import partial

BATCH_SIZE = 8
PROMPTS = {"generate": 16, "evaluate": 16}  # x 2 samples each: 4 batches of 8
SAMPLES = {"generate": 2, "evaluate": 2}


def run_stage(stage: str, out: Path, overrides: tuple = ()) -> dict:
    """The stage as the loop calls it, sampled hot (temperature 1.5: outputs vary with the random numbers): 4 batches
    of 8."""
    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.grading import get_grader
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.hf import Generator
    from thinkswitch.setup import resolve_pair
    from thinkswitch.stages.evaluate import evaluate
    from thinkswitch.stages.generate import generate_labels

    cfg = compose([f"generation.batch_size={BATCH_SIZE}", "model.sampling.thinking.temperature=1.5", *overrides])
    pair = resolve_pair(cfg.model, CACHE)
    generator = Generator(model=cfg.model, generation=cfg.generation, device=torch.device("cpu"))
    examples = task_examples(PROMPTS[stage], 7, "train", TestbedSpec())
    if stage == "generate":
        return generate_labels(generator=generator, checkpoint=pair.thinking, examples=examples,
                               sampling=cfg.model.sampling.thinking, samples=SAMPLES[stage], system_prompt=None,
                               seed=11, out=out)
    return evaluate(generator=generator, checkpoint=pair.thinking, role="thinking", examples=examples,
                    grader=get_grader("last_integer"), sampling=cfg.model.sampling.thinking, samples=SAMPLES[stage],
                    system_prompt=None, seed=12, out=out)


if __name__ == "__main__":
    stage, out, kill_after = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    batches = []

    def kill(path, results):
        batches.append(len(results))
        if len(batches) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    partial.AFTER_BATCH.append(kill)
    run_stage(stage, out, tuple(sys.argv[4:]))
