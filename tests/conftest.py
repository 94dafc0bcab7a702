"""Test setup: no network, W&B offline, tiny models built locally once per session."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import pytest

from tests.support.paths import CACHE, SHARED_DATA
from tests.support.shared import REFERENCE_ARGS, compose, made_once

# Never reach a hub; W&B writes offline runs only.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# pytest-xdist (`make test` runs two workers): each worker's torch, and the runs it starts, get an equal share of
# the cores instead of all of them each (oversubscribed, two workers ran the suite only 18% faster than one).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
# A fresh stage cache per test session: tests decide what is reused, not earlier sessions.
os.environ["THINKSWITCH_STAGE_CACHE"] = tempfile.mkdtemp(prefix="thinkswitch-stages-")



def pytest_collection_modifyitems(items):
    """Slow tests first (a stable sort: each module's tests keep their order). With `make test`'s scheduling
    (pytest-xdist, `--maxschedchunk 1`: each worker is handed one test at a time) the quick tests then fill in
    at the end and the workers finish together, instead of one running a long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# Modules whose tests share one expensive module fixture (test_vllm: a vLLM engine, ~25 s to start on this CPU).
ONE_WORKER = ("tests/engines/test_vllm.py",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's `load` scheduling, except that the worker handed a test of a `ONE_WORKER` module is handed
    all of that module's tests with it, in order: its module fixtures are made once, not once per worker.
    (`--dist loadgroup` would say this with marks, but pytest-xdist 3.8's grouping is a no-op under pytest 9.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScheduling

    class Scheduling(LoadScheduling):
        @functools.cached_property
        def module(self) -> list[str]:  # of each collected test, by index
            return [nodeid.split("::")[0] for nodeid in self.collection]

        def _send_tests(self, node, num: int) -> None:
            module, chosen = self.module, []
            for index in self.pending[:num]:
                if module[index] not in ONE_WORKER:
                    chosen.append(index)
                elif index not in chosen:  # the first of its module: all of them, in order
                    chosen += [i for i in self.pending if module[i] == module[index]]
            if chosen:
                taken = set(chosen)
                self.pending[:] = [i for i in self.pending if i not in taken]
                self.node2pending[node].extend(chosen)
                node.send_runtest_some(chosen)

    return Scheduling(config, log)


@pytest.fixture(scope="session")
def testbed_pair():
    """The built-in testbed pair (built on first use, ~2-3 min on 2 cores, then cached)."""
    from thinkswitch.setup import resolve_pair

    cfg = compose()
    return resolve_pair(cfg.model, CACHE)


@pytest.fixture(scope="session")
def tiny_2507_pair(tmp_path_factory):
    """A tiny Qwen3 pair with 2507 conventions, trained on the real AIME and PubMedQA prompts (once per session,
    see `made_once`): its (instruct, thinking) paths."""
    from tests.support.tinypair import build_tiny_pair
    from thinkswitch.data.domains import load_domain

    def make(path: Path) -> None:
        prompts = []
        for name in ("aime_local", "pubmedqa_local"):
            cfg = compose([f"domain={name}", f"data_dir={SHARED_DATA}", "domain.train_prompts=20"])
            train, evaluation = load_domain(cfg.domain, cfg.model)
            prompts += [ex["prompt"] for ex in train + evaluation]
        build_tiny_pair(path, prompts)

    path = made_once(tmp_path_factory, "tiny2507", make)
    return str(path / "instruct"), str(path / "thinking")


@pytest.fixture(scope="session")
def reference_run(testbed_pair, tmp_path_factory) -> Path:
    """The finished run directory of `thinkswitch REFERENCE_ARGS` (once per session, see `made_once`); its
    console output is `console.txt` beside it."""
    from tests.support import cli

    def make(path: Path) -> None:  # in a new interpreter: the one run that starts as a user's does, imports and all
        proc = cli.thinkswitch(*REFERENCE_ARGS, run_dir=path / "run", timeout=600, fresh=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (path / "console.txt").write_text(proc.stdout + proc.stderr)

    return made_once(tmp_path_factory, "reference", make) / "run"
