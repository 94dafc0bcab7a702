"""Stage 4, merge: the new thinking checkpoint by SLERP, through mergekit's Python API.

t=0 is the thinking checkpoint (mergekit's `base_model`), t=1 the new instruct checkpoint. The
merged checkpoint keeps the thinking model's tokenizer, chat template and generation config
(copied explicitly from the base, not left to mergekit's defaults). The resolved mergekit YAML is
saved beside the weights as `mergekit.yaml`.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkswitch.config import MergeConfig
from thinkswitch.errors import StageError
from thinkswitch.stages.inputs import Artifact, output_path, outside
from thinkswitch.store.io import atomic_path
from thinkswitch.store.paths import MERGEKIT_YAML

log = logging.getLogger(__name__)

# What makes a thinking model behave as one besides its weights: always taken from the base.
THINKING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                  "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json")
# MergeOptions this stage sets itself (a run's outputs are safetensors, and nothing runs remote code)
OWNED_OPTIONS = ("write_model_card", "trust_remote_code", "safe_serialization")


def mergekit_config(cfg: MergeConfig, thinking: str, instruct: str) -> dict:
    """The mergekit configuration as a plain dict (what is saved as `mergekit.yaml`)."""
    config: dict[str, Any] = {
        "merge_method": cfg.method,
        "base_model": thinking,
        "models": [{"model": thinking}, {"model": instruct}],
        "parameters": {"t": cfg.t},
    }
    if cfg.dtype:
        config["dtype"] = cfg.dtype
    return config


def merge_options(cfg: MergeConfig, shard_size: int):
    """mergekit's MergeOptions: our defaults, then `merge.options`, then what this stage owns."""
    from mergekit.merge import MergeOptions

    return MergeOptions(**{"copy_tokenizer": True, "lazy_unpickle": False, "quiet": True,
                           "out_shard_size": shard_size, **cfg.options,
                           "write_model_card": False, "trust_remote_code": False, "safe_serialization": True})


def check(cfg: MergeConfig, shard_size: int) -> list[str]:
    """Errors in `merge.*`, found by mergekit itself on placeholder paths (before any model loads)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions
    from mergekit.merge_methods import registry

    errors = []
    names = sorted(m.spec.name for m in registry.registered_methods())
    if cfg.method not in names:
        errors.append(f"merge.method: unknown mergekit method {cfg.method!r}; known: {', '.join(names)}")
    unknown = sorted(set(cfg.options) - set(MergeOptions.model_fields) - set(OWNED_OPTIONS))
    owned = sorted(set(cfg.options) & set(OWNED_OPTIONS))
    if unknown:
        errors.append(f"merge.options: unknown mergekit option(s) {unknown}")
    if owned:
        errors.append(f"merge.options: {owned} are set by thinkswitch (safetensors, no remote code, no model card)")
    if not unknown and not owned:
        try:
            merge_options(cfg, shard_size)
        except ValueError as e:  # pydantic's ValidationError
            errors.append(f"merge.options: {_first_line(e)}")
    if isinstance(cfg.t, list) and any(isinstance(x, dict) for x in cfg.t) \
            and not any(isinstance(x, dict) and "filter" not in x for x in cfg.t):
        errors.append("merge.t: a per-filter list needs a last entry without a filter (the value for every "
                      "other tensor), e.g. [{filter: self_attn, value: 0.5}, {value: 0.3}]")
    try:
        MergeConfiguration.model_validate(mergekit_config(cfg, "/placeholder/thinking", "/placeholder/instruct"))
    except ValueError as e:
        errors.append(f"merge: mergekit rejects the configuration: {_first_line(e)}")
    return errors


def check_filters(cfg: MergeConfig, checkpoint: str) -> list[str]:
    """Errors for per-filter `merge.t` entries whose filter matches no tensor of `checkpoint` (mergekit applies a
    filter to the tensors whose name contains it; one that matches none leaves every tensor at the default
    value, silently), each with the closest part of a tensor name. Reads safetensors headers only."""
    import difflib

    from thinkswitch.sizing.weights import checkpoint_tensors

    filters = [(i, x["filter"]) for i, x in enumerate(cfg.t if isinstance(cfg.t, list) else [])
               if isinstance(x, dict) and x.get("filter") not in (None, "*")]
    if not filters:
        return []
    try:
        names = [name for name, _ in checkpoint_tensors(checkpoint)[0]]
    except ValueError:  # a hub id whose config is not at hand: mergekit applies the filters as they are
        return []
    parts = sorted({p for name in names for p in name.split(".") if not p.isdigit()})
    errors = []
    for i, f in filters:
        if not any(str(f) in name for name in names):
            close = difflib.get_close_matches(str(f), parts, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (names look like {names[len(names) // 2]!r})"
            errors.append(f"merge.t[{i}].filter: {f!r} matches no tensor of {checkpoint}{hint}")
    return errors


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


@dataclass(frozen=True)
class MergeInputs:
    """What the merged checkpoint depends on (its keys: `stages.inputs.stage_key`)."""

    thinking: Artifact  # t=0: the current thinking checkpoint, or the starting one (merge.base=initial)
    instruct: Artifact  # t=1: the new instruct checkpoint
    cfg: MergeConfig
    shard_size: int = outside(why="how the weights are split into files (shard_size), not what they are; a "
                                  "resume may change it")
    out: Path = output_path()


def merge(inputs: MergeInputs) -> dict:
    """SLERP `thinking` (t=0) toward `instruct` (t=1) into `out`; returns `merge/*` metrics.

    mergekit maps one input shard per model at a time and holds one output shard in memory, so peak
    memory follows the shard size (`shard_size`, unless `merge.options.out_shard_size` is set).
    """
    cfg, out, shard_size = inputs.cfg, inputs.out, inputs.shard_size
    thinking, instruct = inputs.thinking.path, inputs.instruct.path
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge

    t0 = time.perf_counter()
    for role, path in (("thinking", thinking), ("instruct", instruct)):
        if not Path(path).is_dir():  # hub ids are resolved to local snapshots at setup (thinkswitch.hub)
            raise StageError(f"merge: the {role} checkpoint {path} is not a local directory")
    thinking, instruct = str(Path(thinking).resolve()), str(Path(instruct).resolve())  # mergekit asks the hub otherwise
    config = mergekit_config(cfg, thinking, instruct)
    with atomic_path(out) as tmp:
        run_merge(MergeConfiguration.model_validate(config), str(tmp), merge_options(cfg, shard_size))
        for name in THINKING_FILES:
            if (Path(thinking) / name).exists():
                shutil.copy2(Path(thinking) / name, tmp / name)
        (tmp / MERGEKIT_YAML).write_text(yaml.safe_dump(config, sort_keys=False))
    seconds = time.perf_counter() - t0
    log.info("merge: %s t=%s -> %s (%.1fs)", cfg.method, config["parameters"]["t"], out, seconds)
    return {"merge/seconds": seconds}
