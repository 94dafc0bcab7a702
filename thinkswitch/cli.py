"""`thinkswitch`: the Hydra entry point. Hydra lives here and nowhere else."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from thinkswitch.config import register_configs

log = logging.getLogger("thinkswitch")

# conf/ sits beside the package in the source tree (the project is installed editable). An
# absolute path keeps Hydra from looking for a Python module named `conf` under a console script.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

register_configs()


def _quiet_libraries() -> None:
    """Our own progress bars say what is happening; silence the libraries' per-load bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def _name_the_run(cfg: DictConfig) -> None:
    """W&B conventions: a sweep's jobs share a group (the sweep), each run is named by its
    overrides and tagged with domain, model, method and trainer, unless the config says otherwise."""
    hc = HydraConfig.get()
    tracking = cfg.tracking
    if tracking.name is None:
        tracking.name = hc.job.override_dirname or Path(cfg.run_dir).name
    if tracking.group is None and hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir)
        tracking.group = f"sweep-{sweep.parent.name}-{sweep.name}"
    tags = [f"domain:{cfg.domain.name}", f"model:{cfg.model.name}", f"method:{cfg.method.name}",
            f"trainer:{cfg.trainer.name}"]
    tracking.tags = list(dict.fromkeys([*tracking.tags, *tags]))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one experiment; the return value (final instruct accuracy) is what sweepers optimise."""
    from thinkswitch.loop import run_experiment
    from thinkswitch.report import iteration_table
    from thinkswitch.sources import DataError
    from thinkswitch.validate import ConfigError

    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    _quiet_libraries()
    _name_the_run(cfg)
    try:
        summary = run_experiment(cfg)
    except Exception as e:
        if isinstance(e, (ConfigError, DataError)) and HydraConfig.get().mode == RunMode.RUN:
            log.error("invalid %s: %s", "config" if isinstance(e, ConfigError) else "data", e)
            raise SystemExit(2) from None
        raise  # in a sweep, Hydra records the failed job and runs the others
    log.info("results (%s):\n%s", cfg.run_dir, iteration_table(summary["history"], summary.get("paired")))
    return summary["final"]["instruct/accuracy"]


if __name__ == "__main__":
    main()
