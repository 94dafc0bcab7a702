"""`thinkswitch`: the Hydra entry point. Hydra lives here and nowhere else."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
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


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one experiment; the return value (final instruct accuracy) is what sweepers optimise."""
    from thinkswitch.loop import run_experiment
    from thinkswitch.report import iteration_table
    from thinkswitch.validate import ConfigError

    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    _quiet_libraries()
    try:
        summary = run_experiment(cfg)
    except ConfigError as e:
        log.error("invalid config: %s", e)
        raise SystemExit(2) from None
    log.info("results (%s):\n%s", cfg.run_dir, iteration_table(summary["history"]))
    return summary["final"]["instruct/accuracy"]


if __name__ == "__main__":
    main()
