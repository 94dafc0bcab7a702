"""Regenerate the README's demo table from a real run: `python -m benchmarks.readme_table [RUN_DIR]`.

Without RUN_DIR it runs the default experiment (`thinkswitch`, as `make demo` does) in a temporary
directory first. The table (the run's own console table) replaces the block between the README's
`<!-- demo-table -->` markers; `tests/testbed/test_testbed.py` checks its iteration-0 row against the code.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT

MARK = "<!-- demo-table -->"


def main() -> None:
    from thinkswitch.analysis.console import iteration_table
    from thinkswitch.store.io import read_json

    if len(sys.argv) > 1:
        run_dir = Path(sys.argv[1])
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="thinkswitch-demo-")) / "run"
        subprocess.run([sys.executable, "-m", "thinkswitch.cli", f"hydra.run.dir={run_dir}"], cwd=ROOT, check=True)
    summary = read_json(run_dir / "summary.json")
    table = iteration_table(summary["history"], summary.get("paired"))
    readme = (ROOT / "README.md").read_text()
    head, _old, tail = readme.split(MARK)
    (ROOT / "README.md").write_text(f"{head}{MARK}\n```\n{table}\n```\n{MARK}{tail}")
    sys.stdout.write(table + "\n")


if __name__ == "__main__":
    main()
