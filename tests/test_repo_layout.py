"""The tests and the benchmarks are packages run from the repository root (`python -m benchmarks.bench`): no
benchmark edits `sys.path`, no test module imports another or conftest (what tests share is in tests/support)."""

import ast
import re
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

PATH_EDIT = re.compile(r"sys\.path\s*(\.\s*(insert|append|extend)|\[|[+]?=)")


def sources(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def test_no_benchmark_edits_sys_path():
    edits = [f"{p.relative_to(ROOT)}:{i}" for p in sources("benchmarks")
             for i, line in enumerate(p.read_text().splitlines(), 1) if PATH_EDIT.search(line)]
    assert sources("benchmarks") and not edits, edits


def imported(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_no_test_module_imports_another_or_conftest():
    wrong = {f"{p.relative_to(ROOT)}: {name}" for folder in ("tests", "benchmarks") for p in sources(folder)
             for name in imported(p) if name.split(".")[-1].startswith("test_") or "conftest" in name.split(".")}
    assert not wrong, sorted(wrong)
    assert imported(ROOT / "tests" / "test_loop.py") >= {"tests.support.checkpoints"}  # the check sees imports


@pytest.mark.parametrize("module", ["bench", "bench_cb", "bench_vllm", "gpu_check", "gpu_carry"])
def test_each_benchmark_runs_as_a_module_from_the_repository_root(module):
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr[-2000:]
