"""The one way tests run `thinkswitch` as a user does: a subprocess from the repository root, sharing the
testbed pair's cache (conftest.CACHE) and the session's environment (offline, its own stage cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from conftest import CACHE, ROOT


def command(*overrides: str, run_dir: Optional[Path] = None, script: Optional[Path] = None) -> list[str]:
    """`python -m thinkswitch.cli` (or a test's wrapper `script`) with `overrides`, in `run_dir` when given."""
    entry = [str(script)] if script else ["-m", "thinkswitch.cli"]
    return [sys.executable, *entry, *overrides, *([f"hydra.run.dir={run_dir}"] if run_dir else [])]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "THINKSWITCH_CACHE": str(CACHE), **extra}


def thinkswitch(*overrides: str, run_dir: Optional[Path] = None, script: Optional[Path] = None,
                env: Optional[dict] = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run it to the end; the completed process (text stdout and stderr)."""
    return subprocess.run(command(*overrides, run_dir=run_dir, script=script), cwd=ROOT,
                          env=environment(**(env or {})), capture_output=True, text=True, timeout=timeout)


def start(*overrides: str, run_dir: Optional[Path] = None) -> subprocess.Popen:
    """Start it; its stdout and stderr together, line by line, on `.stdout`."""
    return subprocess.Popen(command(*overrides, run_dir=run_dir), cwd=ROOT, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

