"""`python -m tests.support.faulty_distill <dir> <step>`: the distill stage on the testbed pair (TRL checkpoints
every 3 steps), SIGKILLed at the end of training step `<step>` (through a TrainerCallback installed by its test hook).

`run_distill` is also what the tests call in-process for the uninterrupted run and for the rerun.
"""

import os
import signal
import sys
from pathlib import Path

import torch

from tests.support.paths import CACHE
from tests.support.shared import compose
from tests.support.stage_inputs import stage_inputs
from thinkswitch.stages import distill

SAVE_STEPS, STEPS, KILL_AT = 3, 8, 5  # 16 pairs, batches of 4, 2 epochs; killed in the second epoch


def run_distill(root: Path, extra=()) -> dict:
    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.setup import resolve_pair
    from thinkswitch.store.io import write_jsonl

    cfg = compose(["trainer.sft.num_train_epochs=2", "trainer.sft.per_device_train_batch_size=4",
                   f"+trainer.sft.save_steps={SAVE_STEPS}", "trainer.sft.logging_steps=1",
                   "trainer.lora.lora_dropout=0.1", *extra])  # dropout: the restored RNG matters
    pair = resolve_pair(cfg.model, CACHE)
    root.mkdir(parents=True, exist_ok=True)
    pairs = root / "pairs.jsonl"
    write_jsonl(pairs, [{"id": e["id"], "sample": 0, "prompt": e["prompt"], "completion": e["answer"]}
                        for e in task_examples(16, 7, "train", TestbedSpec())])
    import peft  # noqa: F401  (as run_experiment does: imported before training)
    device = torch.device("cpu")
    return distill.distill(stage_inputs(distill.DistillInputs, cfg, device, instruct=pair.instruct, pairs=pairs,
                                        seed=3, system_prompt=None, adapter_out=root / "adapter",
                                        model_out=root / "instruct"), device=device)


def kill_at(step: int):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)

    return Kill()


if __name__ == "__main__":
    root, step = Path(sys.argv[1]), int(sys.argv[2])
    distill.EXTRA_CALLBACKS.append(lambda: kill_at(step))
    run_distill(root)
