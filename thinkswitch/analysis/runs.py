"""Finding the runs under a run or sweep directory, and reading each one back from the files it leaves
(.hydra/*.yaml, metrics.jsonl, summary.json, failed.json); Hydra is not imported.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from thinkswitch.analysis.paired import paired_block
from thinkswitch.store.io import read_json, read_jsonl

log = logging.getLogger(__name__)
CONFIG_KEYS = ("merge.t", "domain.train_prompts", "seed", "domain.name", "model.name", "trainer.name")


def _sort_key(path: Path) -> tuple:
    """Hydra's job dirs `<num>_<overrides>` in job order (10 after 9), then by name."""
    m = re.match(r"(\d+)_", path.name)
    return (int(m.group(1)) if m else float("inf"), path.name)


def find_runs(path: Path) -> list[Path]:
    """`path` itself if it is a run dir (holds metrics.jsonl), else every run dir below it, in job order.

    Runs without summary.json (still running, stopped or failed) are included; `load_run` gives their status.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    if (path / "metrics.jsonl").is_file():
        if not (path / "summary.json").is_file():
            log.info("%s: no summary.json, reporting the iterations it finished", path)
        return [path]
    runs = []
    for child in sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_sort_key):
        if (child / ".hydra").is_dir() and not (child / "metrics.jsonl").is_file():
            log.info("skipping %s: no metrics.jsonl (the job never finished its baseline)", child)
        else:
            runs += find_runs(child)
    return runs


def _dig(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def load_run(run_dir: Path) -> dict:
    """One run as a dict: dir, overrides (key -> value string), config (CONFIG_KEYS), history, summary, status."""
    run_dir = Path(run_dir)
    hydra = run_dir / ".hydra"
    overrides: dict[str, str] = {}
    if (hydra / "overrides.yaml").is_file():
        for item in yaml.safe_load((hydra / "overrides.yaml").read_text()) or []:
            key, _, value = str(item).partition("=")
            overrides[key] = value
    composed = yaml.safe_load((hydra / "config.yaml").read_text()) if (hydra / "config.yaml").is_file() else {}
    config = {k: _dig(composed, k) for k in CONFIG_KEYS}
    for k in CONFIG_KEYS:  # no config.yaml: fall back on the command line (typed by YAML, as Hydra does)
        if config[k] is None and k in overrides:
            config[k] = yaml.safe_load(overrides[k])
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    failure = read_json(run_dir / "failed.json") if (run_dir / "failed.json").is_file() else None
    status = "finished" if summary else "failed" if failure else "unfinished"  # summary.json is written last
    history = read_jsonl(run_dir / "metrics.jsonl")
    # the change from iteration 0: as the run recorded it, else from its per-question files (unfinished runs)
    paired = (summary or {}).get("paired") or paired_block(run_dir, history)
    return {"dir": run_dir, "overrides": overrides, "config": config, "history": history,
            "summary": summary, "failure": failure, "status": status, "paired": paired}
