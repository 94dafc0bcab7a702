"""`python -m tests.support.faulty_stage <generate|evaluate> <out> <batches> [hf|vllm|override ...]`: one multi-batch
generation stage on the testbed pair, SIGKILLed right after its `<batches>`-th batch was written to the partial
file (through its test hook). A word without `=` names the backend; overrides (e.g. `generation.backend=cb`) go
after the defaults below. On vLLM a "batch" is what one engine step finished (its size varies).

`run_stage` is also what the tests call in-process for the uninterrupted run and for the rerun.
"""

import os
import signal
import sys
from pathlib import Path

import torch

from tests.support.paths import CACHE
from tests.support.shared import compose
from tests.support.stage_inputs import stage_inputs
from thinkswitch.store import partial

BATCH_SIZE = 8
PROMPTS = {"generate": 16, "evaluate": 16}  # x 2 samples each: 4 batches of 8
SAMPLES = {"generate": 2, "evaluate": 2}


def stage_config(backend: "str | tuple" = "hf"):
    """The stage's config: `backend` names the backend, or is a tuple of overrides."""
    extra = (f"generation.backend={backend}",) if isinstance(backend, str) else tuple(backend)
    return compose([f"generation.batch_size={BATCH_SIZE}", "model.sampling.thinking.temperature=1.5", *extra])


def run_stage(stage: str, out: Path, backend: "str | tuple" = "hf", generator=None) -> dict:
    """The stage as the loop calls it, sampled hot (temperature 1.5: outputs vary with the random numbers): 4 batches
    of 8 on HF. `generator`: one already open (a test's shared vLLM engine), else a Generator of `stage_config`."""
    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.base import Generator
    from thinkswitch.setup import resolve_pair
    from thinkswitch.stages.evaluate import EvaluateInputs, evaluate
    from thinkswitch.stages.generate import GenerateInputs, generate_labels

    cfg = stage_config(backend)
    pair = resolve_pair(cfg.model, CACHE)
    generator = generator or Generator(model=cfg.model, generation=cfg.generation, device=torch.device("cpu"))
    examples = task_examples(PROMPTS[stage], 7, "train", TestbedSpec())
    common = dict(checkpoint=pair.thinking, examples=examples, samples=SAMPLES[stage], system_prompt=None, out=out)
    if stage == "generate":
        return generate_labels(stage_inputs(GenerateInputs, cfg, generator.device, **common, seed=11),
                               generator=generator)
    return evaluate(stage_inputs(EvaluateInputs, cfg, generator.device, **common, role="thinking",
                                 grader="last_integer", seed=12), generator=generator)


def killed_then_resumed(out: Path, kill_after: int, backend: tuple, generated: list) -> dict:
    """`generate` into `out` in a process of its own, SIGKILLed after `kill_after` results reached the partial file;
    then resumed here (`generated`, which the caller's AFTER_BATCH hook fills, cleared first): the resumed stage's
    metrics."""
    from tests.support import cli
    from thinkswitch.store.partial import partial_path

    proc = cli.python("-m", "tests.support.faulty_stage", "generate", out, kill_after, *backend, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not out.exists() and len(partial_path(out).read_text().splitlines()) == 1 + kill_after
    generated.clear()
    return run_stage("generate", out, backend)


if __name__ == "__main__":
    stage, out, kill_after = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    extra = sys.argv[4:]
    backend = extra[0] if len(extra) == 1 and "=" not in extra[0] else tuple(extra) or "hf"
    batches = []

    def kill(path, results):
        batches.append(len(results))
        if len(batches) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    partial.AFTER_BATCH.append(kill)
    run_stage(stage, out, backend)
