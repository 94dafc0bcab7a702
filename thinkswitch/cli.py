"""`thinkswitch`: the Hydra entry point. Hydra and OmegaConf live here (and in `cli_sweeps`, the multirun's
checks and jobs) and nowhere else.

The composed config becomes typed dataclasses (`thinkswitch.config`) once, here; a known error
(`ThinkSwitchError`: a bad key, file or value, a stage that cannot go on) prints one line and
exits non-zero, its traceback going to the run's log file only.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from thinkswitch.cli_sweeps import job_dirname
from thinkswitch.config import GROUPS, ExperimentConfig

log = logging.getLogger("thinkswitch")
OmegaConf.register_new_resolver("thinkswitch.job_dirname", job_dirname, replace=True)  # hydra.sweep.subdir

# The configs ship in the package: thinkswitch/conf (in the source tree a link to the top-level conf/, in a
# wheel a copy), so an editable and a non-editable install read them alike. An absolute path keeps Hydra from
# looking for a Python module named `conf` under a console script.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")
# Loggers whose records belong in the log file, not on the console: tracebacks of known errors and
# the trainer's per-step logs.
FILE_ONLY = ("thinkswitch.details", "thinkswitch.train")
# Where Hydra's files of a run go (`hydra.output_subdir` is null: this module writes them, see RunStart).
HYDRA_FILES = ".hydra"



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
    # read when datasets loads: only a distillation that runs imports it (a cached job never does)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _skip_disk_full(handle_error):
    """A log file handler's `handleError` that stays quiet when the disk is full: the run then stops with one
    line on the console saying so, not with logging's `--- Logging error ---` block per record."""
    def handle(record: logging.LogRecord) -> None:
        from thinkswitch.store.io import is_disk_full

        error = sys.exc_info()[1]
        if error is None or not is_disk_full(error):
            handle_error(record)

    return handle


def _quiet_bitsandbytes() -> None:
    """bitsandbytes warns on import, on every CPU without the optional `kernels` package, that it could not
    load a faster 4-bit CPU kernel (it falls back to its own). Only that message is dropped."""
    def not_kernels(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward from kernels-community")

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(not_kernels)


class HeldLog(logging.Handler):
    """Stands in for the run's log file until the run directory is this run's to write: records are held,
    then written in order (`write_out`); a refused resume never writes them, so its log stays as it was.
    Also sends the FILE_ONLY loggers to the log file only, not to the console."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        root = logging.getLogger()
        self.files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        for h in self.files:
            h.handleError = _skip_disk_full(h.handleError)
        for h in self.files:
            root.removeHandler(h)
        root.addHandler(self)
        for name in FILE_ONLY:
            logger = logging.getLogger(name)
            logger.propagate = False
            logger.handlers = [self]
            logger.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def write_out(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        for h in self.files:
            root.addHandler(h)
        for name in FILE_ONLY:
            logging.getLogger(name).handlers = list(self.files)
        for record in self.records:
            for h in self.files:
                if record.levelno >= h.level:
                    h.handle(record)
        self.records = []


class RunStart:
    """`on_start` for `run_experiment`: once the run directory is this run's to write, Hydra's files
    (`.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`, as Hydra writes them) and the held log go there."""

    def __init__(self, task_yaml: str, held: HeldLog):
        self.task_yaml, self.held, self.started = task_yaml, held, False

    def __call__(self) -> None:
        from thinkswitch.store.io import write_text

        if self.started:
            return
        self.started = True
        hydra_dir = Path(HydraConfig.get().runtime.output_dir) / HYDRA_FILES
        write_text(hydra_dir / "config.yaml", self.task_yaml)
        write_text(hydra_dir / "hydra.yaml", OmegaConf.to_yaml(HydraConfig.instance().cfg))
        write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(HydraConfig.get().overrides.task))
        self.held.write_out()


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


def compose(overrides: Sequence[str] = (), run_dir: str = "unused", hydra_config: bool = False):
    """The config `thinkswitch <overrides>` would run, composed with Hydra's compose API from `conf/`, as typed
    dataclasses (`hydra_config=True`: Hydra's raw DictConfig, with its `hydra` node); no run starts and nothing is
    written (`run_dir`: a placeholder unless given). `thinkswitch-plan`, the tests and the benchmarks use it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"run_dir={run_dir}", *overrides],
                            return_hydra_config=hydra_config)
    return cfg if hydra_config else to_config(cfg)


def known_error(error: Exception, run_dir: str) -> Exception:
    """`error` as the project's own (ThinkSwitchError) where it is one: a full disk met outside an atomic
    write (a library writing a checkpoint) becomes DiskFull naming the file. Anything else is re-raised."""
    from thinkswitch.errors import ThinkSwitchError
    from thinkswitch.store.io import disk_full, is_disk_full

    if isinstance(error, ThinkSwitchError):
        return error
    if is_disk_full(error):
        return disk_full(Path(getattr(error, "filename", None) or run_dir))
    raise error


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run(cfg: DictConfig) -> float:
    """Run one experiment; the return value (final instruct accuracy) is what sweepers optimise."""
    from thinkswitch.analysis.console import iteration_table
    from thinkswitch.loop import run_experiment
    from thinkswitch.stopping import Stopped, error_line, stop_on_signals

    _quiet_bitsandbytes()
    start = RunStart(OmegaConf.to_yaml(cfg), HeldLog())
    _name_the_run(cfg)
    try:
        with stop_on_signals():
            experiment = to_config(cfg)
            if experiment.num_threads is not None and experiment.num_threads >= 1:
                import torch

                torch.set_num_threads(experiment.num_threads)
            _quiet_libraries()
            summary = run_experiment(experiment, on_start=start,
                                     keep_heap_frozen=HydraConfig.get().mode == RunMode.MULTIRUN)
    except Stopped as e:  # SIGTERM, Ctrl-C: one line, like a known error (`thinkswitch.stopping`)
        _stopped(e, cfg.run_dir, start.started)
    except Exception as e:  # noqa: BLE001 - a known error is one line; anything else keeps its traceback
        e = known_error(e, cfg.run_dir)
        logging.getLogger("thinkswitch.details").error("%s", e, exc_info=True)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise e  # Hydra records the failed job and runs the others
        log.error("%s", error_line(e, cfg.run_dir, start.started))
        sys.exit(e.exit_code)
    log.info("results (%s):\n%s", cfg.run_dir, iteration_table(summary["history"], summary.get("paired")))
    return summary["final"]["instruct/accuracy"]


def _stopped(error, run_dir: str, started: bool) -> None:
    """A run stopped by a signal: its traceback to the log file, one line naming where it stopped, exit 128 + the
    signal (in a multirun, the job fails as with any error)."""
    from thinkswitch.stopping import stopped_line
    from thinkswitch.store.io import read_json
    from thinkswitch.store.paths import RunPaths

    logging.getLogger("thinkswitch.details").error("%s", error, exc_info=True)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise error
    failed = RunPaths(Path(run_dir)).failed
    where = (read_json(failed) if failed.exists() else {"stage": "setup"}) if started else None
    log.error("%s", stopped_line(error, run_dir, where))
    sys.exit(error.exit_code)


def composition_error(error: BaseException) -> str:
    """Hydra's message for a config it could not compose (a bad override, option or value), and its
    cause's (OmegaConf: the allowed values, the expected type), on one line."""
    from omegaconf.errors import OmegaConfBaseException

    text = str(error).split("Config search path:")[0]  # Hydra's search path: plumbing, not the mistake
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):  # its first line; the rest is full_key / object_type
        text += ": " + str(cause).strip().splitlines()[0]
    return "error: " + " ".join(text.split())


def main() -> None:
    """The `thinkswitch` command. A config Hydra cannot compose (a bad override, option or value) is one line
    on stderr and exit 2, like every config error; `HYDRA_FULL_ERROR=1` keeps Hydra's own report. Anything
    else Hydra reports as it always does."""
    from hydra._internal import utils

    report = utils.run_and_report

    def compact_first(func):
        return report(lambda: _composition_errors_in_one_line(func))

    utils.run_and_report = compact_first  # Hydra's own runner calls it by this name, in this module
    try:
        from thinkswitch import cli_sweeps

        if cli_sweeps.check_sweep_points(sys.argv[1:], compose, composition_error):  # every point, before any job
            cli_sweeps.isolate_parallel_jobs()  # one job's death fails that job only
        with cli_sweeps.failed_jobs_in_one_line():
            run()
    finally:
        utils.run_and_report = report


def _composition_errors_in_one_line(func):
    from hydra.errors import CompactHydraException

    from thinkswitch.errors import ThinkSwitchError

    try:
        return func()
    except CompactHydraException as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stderr.write(composition_error(e) + "\n")
        sys.exit(2)
    except ThinkSwitchError as e:  # a multirun's failed job (its traceback is in its own log)
        from thinkswitch.cli_sweeps import job_line

        sys.stderr.write(job_line(e) + "\n")
        sys.exit(e.exit_code)
    except OSError as e:  # Hydra making the run directory or its log file (read-only, a file in the way, full)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or e.filename is None:
            raise
        what = {FileExistsError: "exists and is not a directory", NotADirectoryError: "is under a file, not a "
                "directory"}.get(type(e), f"cannot be written ({e.strerror})")
        sys.stderr.write(f"error: run_dir: {e.filename} {what}; choose another with hydra.run.dir=...\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
