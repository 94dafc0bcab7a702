"""A 2-point t sweep on the testbed, as a user runs it: W&B offline, then the local report."""

import csv
import shutil
import subprocess
import sys

import pytest

from tests.support import cli
from tests.support.shared import compose, made_once
from thinkswitch.store.io import read_json

SMALL = ["iterations=1", "domain.train_prompts=64", "domain.eval_size=100", "tracking.mode=offline"]


def thinkswitch(*args, timeout=900):
    return cli.thinkswitch(*args, timeout=timeout)


@pytest.fixture(scope="session")
def sweep(testbed_pair, tmp_path_factory):
    """A finished two-point sweep (once per session, shared by the xdist workers: conftest.made_once)."""
    def make(path):
        proc = thinkswitch("--multirun", "merge.t=0,0.5", *SMALL, f"hydra.sweep.dir={path / 't'}")
        assert proc.returncode == 0, proc.stderr[-4000:]

    return made_once(tmp_path_factory, "sweep", make) / "t"


@pytest.mark.slow
def test_each_job_has_its_own_directory_named_by_its_overrides(sweep):
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2 and "merge.t=0" in jobs[0] and "merge.t=0.5" in jobs[1]
    assert all("tracking.mode" not in j for j in jobs)  # plumbing keys stay out of the names
    for job in jobs:
        assert (sweep / job / "summary.json").exists()


@pytest.mark.slow
def test_wandb_runs_share_the_sweep_group_and_are_named_and_tagged(sweep):
    for job in (p for p in sweep.iterdir() if p.is_dir()):
        assert len(list((job / "wandb").glob("offline-run-*/*.wandb"))) == 1
        run = read_json(job / "wandb_run.json")  # as the live wandb.Run object reported it
        assert run["group"] == f"sweep-{sweep.parent.name}-{sweep.name}"
        assert {"domain:testbed", "method:thinkswitch", "trainer:lora", "model:testbed"} <= set(run["tags"])
        assert run["name"] == job.name.split("_", 1)[1]  # the run's name: its overrides


@pytest.mark.slow
def test_report_reads_the_sweep_back(sweep, tmp_path):
    sweep = shutil.copytree(sweep, tmp_path / sweep.name)  # the report is written into it; the fixture is shared
    proc = subprocess.run([sys.executable, "-m", "thinkswitch.analysis.report", str(sweep)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = sweep / "report"
    rows = list(csv.DictReader((report / "runs.csv").open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    for row in rows:
        summary = read_json(sweep / row["dir"] / "summary.json")
        assert float(row["instruct/final/accuracy"]) == pytest.approx(summary["final"]["instruct/accuracy"])
        assert int(row["thinking/final/n"]) == 100
    md = (report / "runs.md").read_text()
    assert md.count("merge.t=0") == 2 and "|" in md
    for png in ("accuracy_vs_iteration.png", "final_accuracy_vs_t.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "final_accuracy_vs_train_prompts.png" in read_json(report / "summary.json")["skipped"]


@pytest.mark.slow
def test_t0_changes_only_the_instruct_model(sweep):
    t0 = read_json(next(sweep.glob("0_*")) / "summary.json")
    # at t=0 the new thinking checkpoint is the old one, evaluated with the same seed: same score
    assert t0["final"]["thinking/correct"] == t0["baseline"]["thinking/correct"]


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(testbed_pair, tmp_path):
    """A point that passes validation but fails in its job (here at setup: a per-filter t whose filter matches no
    tensor of the checkpoint; a value out of range is refused before any job, tests/test_sweep_points.py)."""
    proc = thinkswitch("--multirun", "merge.t=[{filter:self_atn,value:0.5},{value:0.2}],0.2", *SMALL,
                       "tracking.mode=disabled", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0
    bad, good = next(tmp_path.glob("0_*")), next(tmp_path.glob("1_*"))
    assert "self_atn" in read_json(bad / "failed.json")["error"]
    assert (good / "summary.json").exists() and not (good / "failed.json").exists()


def test_search_and_launcher_configs_compose():
    cfg = compose(["hparams_search=optuna_t"], hydra_config=True)
    assert cfg.hydra.sweeper.params["merge.t"] == "interval(0.0, 1.0)"
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.sampler.seed == 0
    assert "SlurmLauncher" in compose(["hydra/launcher=slurm_gpu"], hydra_config=True).hydra.launcher._target_
    assert compose(["hydra/launcher=slurm_gpu"], hydra_config=True).hydra.launcher.gpus_per_node == 1
    assert "JoblibLauncher" in compose(["hydra/launcher=parallel"], hydra_config=True).hydra.launcher._target_
    assert "LocalLauncher" in compose(["hydra/launcher=submitit_local"], hydra_config=True).hydra.launcher._target_


@pytest.mark.slow
def test_optuna_search_runs(testbed_pair, tmp_path):
    proc = thinkswitch("--multirun", "hparams_search=optuna_t", "hydra.sweeper.n_trials=2", *SMALL,
                       "tracking.mode=disabled", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    import yaml

    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert 0.0 <= best["best_params"]["merge.t"] <= 1.0 and 0.0 <= best["best_value"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["submitit_local"])  # parallel: tests/test_parallel_sweep.py
def test_launchers_run_a_two_point_sweep(testbed_pair, tmp_path, launcher):
    proc = thinkswitch("--multirun", f"hydra/launcher={launcher}", "merge.t=0.1,0.3", *SMALL,
                       "tracking.mode=disabled", "num_threads=1", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list(tmp_path.glob("*/summary.json"))) == 2
