"""One builder of a stage's inputs outside the loop, for the tests and the benchmarks: `stage_inputs(Kind, cfg,
**given)` fills every field of `Kind` (GenerateInputs, EvaluateInputs, StripInputs, GoldInputs, DistillInputs,
MergeInputs) that is not given from the composed config, as the loop does (FROM_CONFIG); a path given for a
checkpoint or file the stage reads (an `Artifact` field) becomes `Artifact.at(path)`, and examples a tuple.

When the stages' inputs change, this file is the one place that follows them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from thinkswitch.stages.inputs import Artifact, Engine, Numerics
from thinkswitch.store.io import parse_size

# the inputs whose `cfg` is a config section
SECTION = {"MergeInputs": "merge", "StripInputs": "distill", "GoldInputs": "distill"}


def from_config(kind: type, cfg, device, role: str) -> dict:
    """The value of each field of `kind` the caller does not give, taken from `cfg` as the loop takes it (fixed seeds:
    a test states the seed it depends on)."""
    return {"sampling": getattr(cfg.model.sampling, role), "samples": 1, "system_prompt": cfg.domain.system_prompt,
            "seed": 0, "grader": cfg.domain.grader, "engine": Engine.of(cfg, device),
            "numerics": Numerics.of(cfg, device), "trainer": cfg.trainer, "model": cfg.model,
            "shard_size": parse_size(cfg.shard_size), "merge_device": cfg.distill.merge_device, "role": role,
            **({"cfg": getattr(cfg, SECTION[kind.__name__])} if kind.__name__ in SECTION else {})}


def stage_inputs(kind: type, cfg, device="cpu", /, **given):
    """`kind(...)` from `given` and, for the rest, `cfg` on `device` (a torch.device or its type's name). The first
    three are positional only: `cfg=` given is the MergeInputs' or StripInputs' own field."""
    defaults = from_config(kind, cfg, device, given.get("role", "thinking"))
    values = {}
    for field in dataclasses.fields(kind):
        if field.name in given:
            value = given[field.name]
            if field.type in ("Artifact", Artifact) and isinstance(value, (str, Path)):
                value = Artifact.at(value)
            values[field.name] = tuple(value) if field.name == "examples" else value
        elif field.name in defaults:
            values[field.name] = defaults[field.name]
    unknown = set(given) - {f.name for f in dataclasses.fields(kind)}
    assert not unknown, f"{kind.__name__} has no fields {sorted(unknown)}"
    return kind(**values)
