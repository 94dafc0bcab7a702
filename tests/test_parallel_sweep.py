"""Parallel sweeps: a shared stage is computed by one job and restored by the others, a holder that dies
never leaves the others waiting, `device=auto` gives each concurrent job its own GPU, and a filesystem
whose locks do not exclude is found at start (the run then computes alone)."""

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from errno import ENOSYS
from pathlib import Path

import pytest
import torch

from tests.support import cli
from tests.support.paths import ROOT
from tests.support.runs import reused
from thinkswitch.engines.devices import choose_device, gpu_ids
from thinkswitch.store.cache import StageCache
from thinkswitch.store.digests import digest_outputs
from thinkswitch.store.locks import check_exclusion, lock_scope

# A job of a sweep, reduced to its stage: claim the key, compute it (seconds) and store it, or restore it.
JOB = """
import json, logging, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from thinkswitch.store.cache import StageCache
from thinkswitch.store.digests import digest_outputs
logging.basicConfig(level=logging.INFO)
dest = Path({dest!r}); dest.mkdir(parents=True, exist_ok=True)
cache = StageCache(Path({stages!r}))
with cache.claim("k", ["gen.jsonl"], dest, "[iter_01] generate") as entry:
    if entry is None:
        print("computing", flush=True)
        time.sleep({seconds})
        (dest / "gen.jsonl").write_text(json.dumps({{"by": str(dest)}}) + "\\n")
        cache.store("k", ["gen.jsonl"], dest, {{"by": str(dest)}}, digest_outputs(dest, ["gen.jsonl"]))
print(json.dumps({{"restored": entry is not None, "gen": (dest / "gen.jsonl").read_text()}}), flush=True)
"""


def job(tmp_path: Path, name: str, seconds: float) -> subprocess.Popen:
    code = JOB.format(root=str(ROOT), dest=str(tmp_path / name / "iter_01"), stages=str(tmp_path / "stages"),
                      seconds=seconds)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    """What the job printed last, and its log (`log`)."""
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return {**json.loads(out.strip().splitlines()[-1]), "log": err}


def test_jobs_that_start_together_compute_a_stage_once_and_the_waiter_names_the_holder(tmp_path):
    first = job(tmp_path, "a", seconds=6)
    assert first.stdout.readline().strip() == "computing"
    second = job(tmp_path, "b", seconds=6)
    a, b = result(first), result(second)
    assert not a["restored"] and b["restored"], "one computes, the other restores"
    assert b["gen"] == a["gen"] == json.dumps({"by": str(tmp_path / "a" / "iter_01")}) + "\n"
    assert str(tmp_path / "a" / "iter_01") in b["log"], "the waiter names the holder's run directory"


def test_a_holder_killed_mid_stage_does_not_leave_the_waiter_waiting(tmp_path):
    holder = job(tmp_path, "a", seconds=300)
    assert holder.stdout.readline().strip() == "computing"
    waiter = job(tmp_path, "b", seconds=0)
    time.sleep(2)
    assert waiter.poll() is None, "it waits while the holder computes"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    b = result(waiter)
    assert not b["restored"] and b["gen"] == json.dumps({"by": str(tmp_path / "b" / "iter_01")}) + "\n", \
        "the waiter took over and computed the stage itself"
    assert StageCache(tmp_path / "stages").restore("k", ["gen.jsonl"], tmp_path / "b").metrics == \
        {"by": str(tmp_path / "b" / "iter_01")}


# -- locks that do not work -------------------------------------------------------------------------
def test_locks_on_a_local_disk_exclude(tmp_path):
    assert check_exclusion(tmp_path) is None
    assert not list(tmp_path.iterdir()), "the probe leaves nothing behind"


def grants_every_lock(fd, op):  # a filesystem whose flock succeeds without excluding anyone
    return None


def has_no_flock(fd, op):  # a filesystem without flock (Lustre mounted with noflock)
    raise OSError(ENOSYS, os.strerror(ENOSYS))


@pytest.mark.parametrize("broken, why", [(grants_every_lock, "granted while the first was held"),
                                         (has_no_flock, "does not work there")])
def test_locks_that_do_not_exclude_are_found_and_the_run_computes_alone(tmp_path, monkeypatch, caplog, broken, why):
    stages = tmp_path / "stages"
    src = tmp_path / "src"
    src.mkdir()
    (src / "gen.jsonl").write_text("{}\n")
    monkeypatch.setattr(fcntl, "flock", broken)
    assert why in check_exclusion(tmp_path)
    cache = StageCache(stages)
    with caplog.at_level(logging.WARNING):
        cache.turns.check()
    assert "computes its stages alone" in caplog.text and cache.turns.locks is None
    with cache.claim("k", ["gen.jsonl"], tmp_path / "run", "[iter_01] generate") as entry:
        assert entry is None  # no lock to wait on: it computes
        cache.store("k", ["gen.jsonl"], src, {}, digest_outputs(src, ["gen.jsonl"]))
    assert not (stages / ".locks" / "k.lock").exists()


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
90 27 0:50 / /shared rw,relatime - nfs4 fs:/export rw,vers=4.2,hard,proto=tcp,local_lock={lock},addr=10.0.0.1
"""


@pytest.mark.parametrize("lock, local", [("none", False), ("flock", True), ("all", True)])
def test_an_nfs_mount_whose_locks_stay_on_each_host_is_named(lock, local):
    note = lock_scope(Path("/shared/stages"), MOUNTINFO.format(lock=lock))
    assert (note is not None) == local
    if local:
        assert f"/shared is nfs4 mounted with local_lock={lock}" in note and "other hosts" in note
    assert lock_scope(Path("/home/me/stages"), MOUNTINFO.format(lock=lock)) is None


# -- one GPU per job -----------------------------------------------------------------------------------
CLAIM = """
import sys
sys.path.insert(0, {root!r})
from thinkswitch.store.locks import claim_one
index, lock = claim_one({ids!r}, {where!r}, poll=0.1, run="job")
print(index, flush=True)
sys.stdin.read()  # held until the test closes stdin (or kills it)
"""


def claimer(ids: list[str], where: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLAIM.format(root=str(ROOT), ids=ids, where=str(where))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_racing_jobs_each_get_their_own_gpu_and_one_too_many_waits_for_a_free_one(tmp_path):
    ids = ["GPU-aaaa", "GPU-bbbb", "GPU-cccc"]
    jobs = [claimer(ids, tmp_path) for _ in ids]  # started at once: they race for the locks
    got = [int(j.stdout.readline()) for j in jobs]
    assert sorted(got) == [0, 1, 2], got
    extra = claimer(ids, tmp_path)
    time.sleep(1.5)
    assert extra.poll() is None, "all GPUs are taken: it waits"
    os.kill(jobs[1].pid, signal.SIGKILL)  # a job dies holding its GPU: the kernel lets it go
    assert int(extra.stdout.readline()) == got[1]
    for j in [jobs[0], jobs[2], extra]:
        j.stdin.close()
        j.wait(timeout=30)
    jobs[1].wait()


def test_device_auto_claims_a_free_gpu_sees_only_it_and_cuda_n_still_pins(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test: choose_device sets it
    ids = ["GPU-aaaa", "GPU-bbbb"]
    first, lock1 = choose_device("auto", tmp_path, "run-a", gpus=ids)
    assert first == torch.device("cuda:0") and os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa"
    second, lock2 = choose_device("auto", tmp_path, "run-b", gpus=ids)
    assert second == torch.device("cuda:0") and os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb", \
        "the next job gets the other GPU, and sees only it"
    assert json.loads((tmp_path / "devices" / "GPU-aaaa.lock").read_text())["run"] == "run-a"
    lock1.release()
    choose_device("auto", tmp_path, "run-c", gpus=ids)[1].release()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa", "a released GPU is free again"
    lock2.release()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert choose_device("cuda:1", tmp_path, "run-d", gpus=ids) == (torch.device("cuda:1"), None)
    assert choose_device("auto", tmp_path, "run-e", gpus=[]) == (torch.device("cpu"), None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "", "a pinned or CPU run leaves it alone"


def test_the_gpus_are_listed_without_starting_cuda_here():
    ids = gpu_ids()
    assert not torch.cuda.is_initialized(), "CUDA_VISIBLE_DEVICES can still be set"
    assert len(ids) == torch.cuda.device_count() and all(i.startswith("GPU-") for i in ids)


# -- a parallel sweep, as a user runs it -----------------------------------------------------------------
SMALL = ["iterations=1", "domain.train_prompts=64", "domain.eval_size=100", "tracking.mode=disabled"]


@pytest.mark.slow
def test_a_parallel_t_sweep_computes_each_shared_stage_once(testbed_pair, tmp_path):
    proc = cli.thinkswitch("--multirun", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "merge.t=0,0.5",
                           *SMALL, f"stage_cache={tmp_path / 'stages'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("[01]_*"))
    assert len(jobs) == 2 and all((j / "summary.json").exists() for j in jobs)
    shared = {"iter_00/evaluate", "iter_01/generate", "iter_01/distill"}
    # the distilled instruct checkpoint's evaluation is reused too when the other job stored it first (not waited for)
    restored = [reused(j) - {"iter_01/evaluate_instruct"} for j in jobs]
    assert restored[0] | restored[1] == shared and not restored[0] & restored[1], \
        f"each shared stage is computed by one job and restored by the other: {restored}"
    assert not list((tmp_path / "stages" / ".locks").glob("*.lock")) or all(
        f.read_bytes() == b"" for f in (tmp_path / "stages" / ".locks").glob("*.lock")), "no holder left behind"
