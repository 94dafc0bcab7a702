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
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from thinkswitch.config import MergeConfig
from thinkswitch.io import atomic_path

log = logging.getLogger(__name__)

# What makes a thinking model behave as one besides its weights: always taken from the base.
THINKING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                  "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json")


def mergekit_config(cfg: MergeConfig, thinking: str, instruct: str) -> dict:
    """The mergekit configuration as a plain dict (what is saved as `mergekit.yaml`)."""
    t: Any = OmegaConf.to_container(cfg.t) if OmegaConf.is_config(cfg.t) else cfg.t
    config: dict[str, Any] = {
        "merge_method": cfg.method,
        "base_model": thinking,
        "models": [{"model": thinking}, {"model": instruct}],
        "parameters": {"t": t},
    }
    if cfg.dtype:
        config["dtype"] = cfg.dtype
    return config


def merge(thinking: str, instruct: str, cfg: MergeConfig, out: Path, shard_size: int) -> dict:
    """SLERP `thinking` (t=0) toward `instruct` (t=1) into `out`; returns `merge/*` metrics.

    mergekit maps one input shard per model at a time and holds one output shard in memory, so peak
    memory follows the shard size (`shard_size`, unless `merge.options.out_shard_size` is set).
    """
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    t0 = time.perf_counter()
    thinking, instruct = str(Path(thinking).resolve()), str(Path(instruct).resolve())  # mergekit asks the hub otherwise
    config = mergekit_config(cfg, thinking, instruct)
    options = MergeOptions(**{"copy_tokenizer": True, "lazy_unpickle": False, "quiet": True,
                              "out_shard_size": shard_size, **dict(cfg.options),
                              "write_model_card": False, "trust_remote_code": False, "safe_serialization": True})
    with atomic_path(out) as tmp:
        run_merge(MergeConfiguration.model_validate(config), str(tmp), options)
        for name in THINKING_FILES:
            if (Path(thinking) / name).exists():
                shutil.copy2(Path(thinking) / name, tmp / name)
        (tmp / "mergekit.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    seconds = time.perf_counter() - t0
    log.info("merge: %s t=%s -> %s (%.1fs)", cfg.method, config["parameters"]["t"], out, seconds)
    return {"merge/seconds": seconds}
