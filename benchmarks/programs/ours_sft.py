"""The framework's distill stage on the default config, timed as `bare_sft` is. Prints {"seconds"}.

    python -m benchmarks.programs.ours_sft INSTRUCT PAIRS OUT
"""

import json
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset  # noqa: F401  the libraries imported before the clock starts, as in the bare script
from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training  # noqa: F401
from trl import SFTConfig, SFTTrainer  # noqa: F401

from benchmarks.common import compose
from tests.support.stage_inputs import stage_inputs
from thinkswitch.loop import frozen_library_heap
from thinkswitch.stages.distill import DistillInputs, distill


def main(instruct: str, pairs: str, out: str) -> None:
    cfg = compose([])
    with frozen_library_heap(cfg):  # as run_experiment does once, at start-up
        t0 = time.perf_counter()
        device = torch.device("cpu")
        distill(stage_inputs(DistillInputs, cfg, device, instruct=instruct, pairs=pairs, seed=11, system_prompt=None,
                             adapter_out=Path(out) / "adapter", model_out=Path(out) / "model"), device=device)
        print(json.dumps({"seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
