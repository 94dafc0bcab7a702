"""SIGTERM with the vLLM engine: one line, exit 143, failed.json, the lock released, and the worker (its own process
group) stopped with the run."""

import os
import re
import signal

import pytest

from tests.support import cli
from thinkswitch.engines.vllm_backend import group_processes, vllm_venv
from thinkswitch.store.io import read_json

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (vllm_venv() / "bin" / "python").exists(), reason="no .venv-vllm")]


def test_sigterm_during_vllm_generation_is_one_line_and_stops_the_worker(testbed_pair, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli.start("generation.backend=vllm", "tracking.mode=disabled", "domain.eval_size=64",
                     "domain.train_prompts=16", "iterations=1", run_dir=run_dir)
    lines, worker = cli.on_vllm_ready(proc, lambda worker: os.kill(proc.pid, signal.SIGTERM))
    out = "".join(lines)
    assert worker and proc.returncode == 143, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    [said] = [line for line in lines if "stopped by SIGTERM" in line]
    assert re.search(rf"stopped by SIGTERM in iter_00 evaluate_instruct; .* rerun with hydra.run.dir={run_dir} ", said)
    assert group_processes(worker) == [], "the worker's process group is gone"
    assert read_json(run_dir / "failed.json")["stage"] == "evaluate_instruct" and not (run_dir / "run.lock").exists()
