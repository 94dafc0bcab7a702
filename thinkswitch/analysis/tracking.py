"""Weights & Biases tracking that never blocks a run.

One W&B run per experiment: the resolved config is its config, every metric is stepped by
`iteration`, sample generations go into a table. W&B is a mirror: `metrics.jsonl` and
`summary.json` in the run directory are the local source of truth.

`online` falls back to `offline` (with a warning) when W&B cannot start: no API key, no network,
a server that does not answer within `init_timeout` seconds. `disabled` turns W&B off.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from thinkswitch.config import TrackingConfig, TrackingMode
from thinkswitch.errors import ConfigError
from thinkswitch.store.io import write_json

log = logging.getLogger(__name__)

DEFAULT_MODE = TrackingMode.offline.value


def tracking_mode(cfg: TrackingConfig) -> tuple[str, str]:
    """The W&B mode and where it came from. Precedence: `tracking.mode` when set (the command line or a
    config file), else the environment's `WANDB_MODE`, else offline. The value is checked at start-up
    (`thinkswitch.validate`), before anything is written."""
    if cfg.mode is not None:
        return str(cfg.mode), "tracking.mode"
    env = os.environ.get("WANDB_MODE")
    if env:
        return env, "WANDB_MODE"
    return DEFAULT_MODE, "default"
SAMPLE_COLUMNS = ["iteration", "model", "prompt", "output", "pred", "gold", "correct", "tokens", "finished"]
TRAINING_COLUMNS = ["iteration", "step", "epoch", "loss", "learning_rate", "grad_norm"]


class Tracker:
    """Mirror of the run's metrics in W&B (or nothing, when disabled)."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, config: dict[str, Any]):
        self.run = None
        self.mode = TrackingMode.disabled.value
        self.samples: list[list[Any]] = []
        self.training: list[list[Any]] = []  # the trainer's per-step logs, a table at the end
        mode, origin = tracking_mode(cfg)
        if mode not in TrackingMode.values():
            raise ConfigError(f"{origin}: {mode!r} is not one of {TrackingMode.values()}")
        if mode == TrackingMode.disabled:
            return
        id_file = Path(run_dir) / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else None
        self.run, self.mode = self._init(cfg, run_dir, config, run_id, mode)
        if self.run is not None:
            id_file.write_text(self.run.id)
            # which W&B run this is, as W&B itself reports it (to find it in the project page)
            write_json(Path(run_dir) / "wandb_run.json", {
                "id": self.run.id, "project": self.run.project, "name": self.run.name, "group": self.run.group,
                "tags": list(self.run.tags or ()), "mode": self.mode})
            self.run.define_metric("iteration")
            self.run.define_metric("*", step_metric="iteration")

    @staticmethod
    def _init(cfg: TrackingConfig, run_dir: Path, config: dict[str, Any], run_id: Optional[str], mode: str):
        import wandb

        kwargs = dict(project=cfg.project, entity=cfg.entity, group=cfg.group, name=cfg.name,
                      tags=list(cfg.tags) or None, config=config, dir=str(run_dir), id=run_id, resume="allow",
                      settings=wandb.Settings(init_timeout=cfg.init_timeout, silent=True))
        try:
            return wandb.init(mode=mode, **kwargs), mode
        except Exception as e:  # noqa: BLE001 - any failure to reach W&B must not stop the run
            if mode != TrackingMode.online:
                log.warning("W&B could not start (%s: %s); tracking disabled", type(e).__name__, e)
                return None, TrackingMode.disabled.value
            log.warning("W&B online could not start (%s: %s); logging offline instead. "
                        "Upload later with `wandb sync %s/wandb/offline-run-*`.", type(e).__name__, e, run_dir)
            return Tracker._init(cfg, run_dir, config, run_id, TrackingMode.offline.value)

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        if self.run is None:
            return
        self._safe(self.run.log, {**{k: v for k, v in metrics.items() if v is not None}, "iteration": iteration})

    def add_samples(self, iteration: int, model: str, rows: list[dict], k: int) -> None:
        for r in rows[:k]:
            self.samples.append([iteration, model, r["prompt"], r["output"], r["pred"], r["gold"], r["correct"],
                                 r["tokens"], r.get("finished")])

    def log_training(self, iteration: int, log_history: list[dict]) -> None:
        """The trainer's per-step logs of one iteration's distillation (TRL's `state.log_history`)."""
        for row in log_history:
            if "loss" in row:
                self.training.append([iteration, *(row.get(c) for c in TRAINING_COLUMNS[1:])])

    def finish(self, summary: Optional[dict[str, Any]], failed: bool) -> None:
        if self.run is None:
            return
        import wandb

        if self.samples:
            self._safe(self.run.log, {"samples": wandb.Table(columns=SAMPLE_COLUMNS, data=self.samples)})
        if self.training:
            self._safe(self.run.log, {"training": wandb.Table(columns=TRAINING_COLUMNS, data=self.training)})
        if summary:
            self._safe(self.run.summary.update, summary)
        self._safe(self.run.finish, exit_code=1 if failed else 0)
        self.run = None

    @staticmethod
    def _safe(fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - W&B failing mid-run must not lose the run
            log.warning("W&B call %s failed (%s); the local files are unaffected", getattr(fn, "__name__", fn), e)

