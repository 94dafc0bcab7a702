"""Every point of a multirun is validated before the first job starts: a bad one is one line naming it, exit 2,
and no job runs (nothing is written)."""

from tests.support import cli
from thinkswitch.cli_sweeps import sweep_points


def test_a_sweep_with_one_bad_point_is_refused_in_one_line_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli.thinkswitch("--multirun", "merge.t=0.1,1.5", "tracking.mode=disabled", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    # transformers prints this line when it is imported with WANDB_MODE=offline (the tests' setting), in a fresh
    # interpreter only: the library's, not the sweep's
    lines = [line for line in (proc.stdout + proc.stderr).strip().splitlines()
             if line != "[INFO] Running in WANDB offline mode"]
    assert lines == ["error: sweep point merge.t=1.5 tracking.mode=disabled: merge.t: 1.5 is outside [0, 1] "
                     "(no job was started)"]
    assert not sweep.exists(), "no job started"


def test_the_points_are_those_the_basic_sweeper_runs_without_hydras_own_keys():
    args = ["--multirun", "-cn", "config", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "merge.t=0.1,0.3",
            "seed=range(1,3)"]
    assert sorted(sweep_points(args)) == sorted([["merge.t=0.1", "seed=1"], ["merge.t=0.1", "seed=2"],
                                                 ["merge.t=0.3", "seed=1"], ["merge.t=0.3", "seed=2"]])
    assert sweep_points(["merge.t=0.1"]) == [], "not a multirun"
    assert sweep_points(["-m", "hydra/sweeper=optuna", "merge.t=interval(0,1)"]) == [], "another sweeper expands it"


def test_a_sweep_jobs_directory_is_one_directory_of_a_bounded_name():
    from thinkswitch.cli_sweeps import NAME_MAX, job_dirname

    assert job_dirname("merge.t=0.1,method=thinkswitch") == "merge.t=0.1,method=thinkswitch"  # as Hydra names it
    path = "model.instruct=/data/ckpt/instruct,merge.t=0.1"
    assert job_dirname(path) == "model.instruct=_data_ckpt_instruct,merge.t=0.1"
    long = [job_dirname(f"model.instruct=/scratch/{'x' * 300},merge.t={t}") for t in (0.1, 0.3)]
    assert all("/" not in n and len(n.encode()) <= NAME_MAX for n in long) and long[0] != long[1]
    unicode = job_dirname("domain.system_prompt=" + "é" * 300)
    assert len(unicode.encode()) <= NAME_MAX and unicode.encode().decode() == unicode
