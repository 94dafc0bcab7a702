"""A non-editable install runs: the wheel holds the configs, and `thinkswitch` runs from outside the checkout.

The wheel is built offline from a copy of the checkout's files (`pip wheel --no-deps --no-build-isolation`) and
installed into a new virtual environment that sees the test environment's packages (a `.pth` naming its
site-packages: not its `.pth` files, so not the editable install of thinkswitch itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.paths import CACHE, ROOT
from thinkswitch.store.io import read_json

BUILD = ("pyproject.toml", "README.md", "thinkswitch/", "conf/")  # what a wheel is built from


def sh(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
    return proc


def checkout_copy(dest: Path) -> Path:
    """The checkout's files (tracked, and new ones not ignored) that a wheel is built from, links kept."""
    listed = sh("git", "ls-files", "-co", "--exclude-standard", cwd=ROOT).stdout.splitlines()
    for name in listed:
        if name.startswith(BUILD) and ((ROOT / name).exists() or (ROOT / name).is_symlink()):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name, follow_symlinks=False)
    return dest


@pytest.mark.slow
def test_the_wheel_runs_from_outside_the_checkout(tmp_path):
    src = checkout_copy(tmp_path / "src")
    assert (src / "thinkswitch" / "conf").is_symlink()  # the package's configs are the top-level conf/
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src,
       cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("thinkswitch-*.whl"))
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
                .stdout.strip())
    (site / "test-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    sh(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = sh(python, "-c", "import thinkswitch.cli as c; print(c.__file__); print(c.CONF_DIR)", cwd=elsewhere)
    module, conf = where.stdout.split()
    assert module.startswith(str(site)) and conf.startswith(str(site)) and not Path(conf).is_symlink()
    job = sh(venv / "bin" / "thinkswitch", "--cfg", "job", "experiment=paper_aime", cwd=elsewhere)
    assert "instruct: Qwen/Qwen3-4B-Instruct-2507" in job.stdout and "\\boxed{{}}" in job.stdout
    run = elsewhere / "run"
    sh(venv / "bin" / "thinkswitch", "iterations=1", "domain.train_prompts=4", "domain.eval_size=5",
       "tracking.mode=disabled", f"hydra.run.dir={run}", cwd=elsewhere, env={"THINKSWITCH_CACHE": str(CACHE)})
    summary = read_json(run / "summary.json")
    assert summary["final"]["instruct/n"] == 5 and [h["iteration"] for h in summary["history"]] == [0, 1]
    assert (run / "iter_01" / "thinking" / "mergekit.yaml").is_file()
    assert not (elsewhere / "outputs").exists() and sorted(p.name for p in elsewhere.iterdir()) == ["run"]
