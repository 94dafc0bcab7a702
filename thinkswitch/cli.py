"""`thinkswitch`: the Hydra entry point. Hydra and OmegaConf live here and nowhere else.

The composed config becomes typed dataclasses (`thinkswitch.config`) once, here; a known error
(`ThinkSwitchError`: a bad key, file or value, a stage that cannot go on) prints one line and
exits non-zero, its traceback going to the run's log file only.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from thinkswitch.config import GROUPS, ExperimentConfig

log = logging.getLogger("thinkswitch")

# conf/ sits beside the package in the source tree (the project is installed editable). An
# absolute path keeps Hydra from looking for a Python module named `conf` under a console script.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
# Loggers whose records belong in the log file, not on the console: tracebacks of known errors and
# the trainer's per-step logs.
FILE_ONLY = ("thinkswitch.details", "thinkswitch.train")



def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore: `thinkswitch_schema` for the root, `<group>/schema` for each group."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="thinkswitch_schema", node=ExperimentConfig)
    for group, node in GROUPS.items():
        cs.store(group=group, name="schema", node=node)


register_configs()


def _quiet_libraries() -> None:
    """Our own progress bars say what is happening; silence the libraries' per-load bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def _file_only_loggers() -> None:
    """Send FILE_ONLY loggers to the log file Hydra set up (its FileHandlers), not to the console."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for name in FILE_ONLY:
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.handlers = files
        logger.setLevel(logging.INFO)


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


def to_config(cfg: DictConfig) -> ExperimentConfig:
    """The composed config as typed dataclasses, every interpolation resolved."""
    from omegaconf.errors import OmegaConfBaseException

    from thinkswitch.errors import ConfigError

    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{getattr(e, 'full_key', '') or 'config'}: {e.msg if hasattr(e, 'msg') else e}") from None


def _one_line(error: BaseException, run_dir: str) -> str:
    from thinkswitch.io import read_json
    from thinkswitch.paths import RunPaths

    line = f"error: {error}"
    failed = RunPaths(Path(run_dir)).failed
    if failed.exists() and read_json(failed).get("iteration"):
        where = read_json(failed)
        line += (f" [in {where['iteration']} {where['stage']}; finished stages are kept: rerun with "
                 f"hydra.run.dir={run_dir} to resume]")
    return line


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one experiment; the return value (final instruct accuracy) is what sweepers optimise."""
    from thinkswitch.errors import ThinkSwitchError
    from thinkswitch.loop import run_experiment
    from thinkswitch.report import iteration_table

    _file_only_loggers()
    _name_the_run(cfg)
    try:
        experiment = to_config(cfg)
        if experiment.num_threads is not None and experiment.num_threads >= 1:
            import torch

            torch.set_num_threads(experiment.num_threads)
        _quiet_libraries()
        summary = run_experiment(experiment)
    except ThinkSwitchError as e:
        logging.getLogger("thinkswitch.details").error("%s", e, exc_info=True)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job and runs the others
        log.error("%s", _one_line(e, cfg.run_dir))
        sys.exit(e.exit_code)
    log.info("results (%s):\n%s", cfg.run_dir, iteration_table(summary["history"], summary.get("paired")))
    return summary["final"]["instruct/accuracy"]


if __name__ == "__main__":
    main()
