"""docs/engines-and-gpus.md maps each of issue 26's ten findings to the tests and `make gpu-check` rows that cover
it: every test it names exists, every row is one gpu-check writes, every finding has a row of the table."""

import ast
import re

from benchmarks.gpu_check import CHECKS
from tests.support.paths import ROOT

DOC = ROOT / "docs" / "engines-and-gpus.md"


def _table() -> list[list[str]]:
    text = DOC.read_text().split("### Issue 26's findings: what checks each", 1)[1].split("\n#", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if re.match(r"\| \d+\. ", line)]


def _tests(path: str) -> set[str]:
    return {n.name for n in ast.walk(ast.parse((ROOT / path).read_text())) if isinstance(n, ast.FunctionDef)}


def test_every_finding_has_a_row_naming_tests_that_exist_and_gpu_check_rows_it_writes():
    rows = _table()
    assert [int(r[0].split(".")[0]) for r in rows] == list(range(1, 11))
    for finding, tests, checks in rows:
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", tests)
        folders = re.findall(r"`(tests/\w+/)`", tests)
        assert named or folders or tests.startswith("none"), finding
        for path, name in named:
            assert name in _tests(path), f"{finding}: {path}::{name} does not exist"
        for folder in folders:
            assert (ROOT / folder).is_dir(), folder
        rows_named = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", checks))  # fields are in parentheses
        assert rows_named and set(rows_named) <= {"env", *CHECKS}, (finding, rows_named)
