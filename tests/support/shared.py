"""The composed config as a test needs it, and what a test session makes once and shares across its workers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def compose(overrides=(), run_dir: str = "/tmp/thinkswitch-unused", hydra_config: bool = False):
    """The experiment config exactly as `thinkswitch` composes it (`thinkswitch.cli.compose`)."""
    from thinkswitch.cli import compose as cli_compose

    return cli_compose(list(overrides), run_dir=run_dir, hydra_config=hydra_config)


# One uninterrupted `thinkswitch` run on the testbed, shared by the loop, resume and trust tests.
REFERENCE_ARGS = ["iterations=1", "domain.train_prompts=64", "domain.eval_size=100", "tracking.mode=offline",
                  "stage_cache=null"]  # stage_cache=null: resuming must work from the run directory alone


def made_once(tmp_path_factory, name: str, make) -> Path:
    """`<session temp>/<name>`, made by `make(path)` once per test session: under pytest-xdist by the first worker
    that asks, under a file lock, the others waiting for it (`<name>/.made` is written once `make` returns).
    Treat the result as read-only: a test that changes it works on a `shutil.copytree` of it."""
    from filelock import FileLock

    # xdist: the workers' base temp dirs share this session's parent; alone: this session's own base temp
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    path = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (path / ".made").exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            make(path)
            (path / ".made").touch()
    return path
