"""The slow store tests' way of working: `thinkswitch` run as a user runs it, on copies of the session's finished
reference run (conftest.reference_run's, without W&B: a key a resume may change), and what they compare."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support import cli
from tests.support.shared import REFERENCE_ARGS
from thinkswitch.store.io import read_json

SMALL = [a if not a.startswith("tracking.mode=") else "tracking.mode=disabled" for a in REFERENCE_ARGS]


def thinkswitch(run_dir, *extra) -> subprocess.CompletedProcess:
    return cli.thinkswitch(*SMALL, *extra, run_dir=run_dir)


def console(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def snapshot(run_dir: Path) -> dict:
    """Every file of a run directory: its size, modification time and SHA-256."""
    import hashlib

    return {p.relative_to(run_dir).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns,
                                                  hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def copy_of(reference: Path, tmp_path: Path, *unfinish: str) -> Path:
    """A copy of the reference run, with the markers `unfinish` (e.g. `iter_01/distill`) removed."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    for stage in unfinish:
        (run_dir / f"{stage}.done").unlink()
    return run_dir


def same_scores(run_dir: Path, reference: Path) -> bool:
    a, b = read_json(run_dir / "summary.json"), read_json(reference / "summary.json")
    return a["final"] == b["final"] and a["baseline"] == b["baseline"]
