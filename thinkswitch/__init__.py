"""ThinkSwitch: distil a thinking model's reasoning into its instruct twin, then SLERP them.

Stages (one module each): generate, strip, distill, merge, evaluate; `loop` runs them in order,
`cli` is the Hydra entry point. Heavy libraries are imported where they are used.
"""

__version__ = "0.1.0"
