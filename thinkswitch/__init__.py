"""ThinkSwitch: distil a thinking model's reasoning into its instruct twin, then SLERP them.

Stages (one module each): generate, strip, distill, merge, evaluate; `loop` runs them in order,
`cli` is the Hydra entry point. Heavy libraries are imported where they are used.
"""

__version__ = "0.1.0"

import os as _os

# Libraries ask torch whether CUDA is there when they are imported (bitsandbytes, through peft, mergekit and TRL, on
# every validation). torch answers with the CUDA runtime, which starts the driver and fixes the GPUs this process sees
# before `engines.devices.choose_device` narrows CUDA_VISIBLE_DEVICES to the GPU a `device=auto` run claims. With
# this, torch asks NVML instead and CUDA starts only when a tensor goes to the GPU (torch's documented switch).
_os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
