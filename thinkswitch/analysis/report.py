"""Report a run or a sweep: runs.csv, runs.md (points.* when seeds pool), plots and summary.json in <dir>/report.

`python -m thinkswitch.analysis.report <run or sweep dir> [--out DIR]` (console script `thinkswitch-report`).
Hydra is not imported: a run is read from the files it leaves (.hydra/*.yaml, metrics.jsonl, summary.json).
The parts: `runs` finds and reads runs, `tables` and `plots` write them, `console` is the run's own table and
`paired` the in-run paired metrics.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from thinkswitch.analysis.plots import PLOTS, plot_final, plot_iterations
from thinkswitch.analysis.runs import find_runs, load_run
from thinkswitch.analysis.tables import markdown_table, points_markdown, points_table, runs_table, to_csv
from thinkswitch.errors import ThinkSwitchError
from thinkswitch.store.io import write_json, write_text

log = logging.getLogger(__name__)


def write_report(path: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """runs.csv, runs.md, the plots and summary.json for the run or sweep at `path`; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    out_dir = Path(out_dir) if out_dir is not None else path / "report"
    run_dirs = find_runs(path)
    if not run_dirs:
        raise FileNotFoundError(f"no run (a dir with metrics.jsonl) at or under {path}")
    runs = [load_run(d) for d in run_dirs]
    rows = runs_table(runs)
    written = {"runs.csv": out_dir / "runs.csv", "runs.md": out_dir / "runs.md"}
    write_text(written["runs.csv"], to_csv(rows))
    write_text(written["runs.md"], markdown_table(rows))
    points = points_table(rows, runs)
    if any(p["seeds"] > 1 for p in points):  # seeds to pool
        written["points.csv"], written["points.md"] = out_dir / "points.csv", out_dir / "points.md"
        write_text(written["points.csv"], to_csv(points))
        write_text(written["points.md"], points_markdown(points))
    skipped = {}
    if any(run["history"] for run in runs):
        written["accuracy_vs_iteration.png"] = out_dir / "accuracy_vs_iteration.png"
        plot_iterations(plt, [r for r in runs if r["history"]], [row for r, row in zip(runs, rows) if r["history"]],
                         written["accuracy_vs_iteration.png"])
    for name, x_key in PLOTS.items():
        why = plot_final(plt, rows, runs, x_key, out_dir / name)
        if why:
            log.info("not plotting %s: %s", name, why)
            skipped[name] = why
        else:
            written[name] = out_dir / name
    written["summary.json"] = out_dir / "summary.json"
    write_json(written["summary.json"], {
        "source": str(path), "runs": [{"name": r["name"], "dir": r["dir"], "status": r["status"]} for r in rows],
        "files": {k: str(v) for k, v in written.items()}, "skipped": skipped})
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="thinkswitch-report", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run dir (holds metrics.jsonl) or a sweep dir")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <path>/report)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        written = write_report(args.path, args.out)
    except FileNotFoundError as e:
        log.error("%s", e)
        return 1
    except ThinkSwitchError as e:  # a torn or malformed metrics.jsonl, ...: the file and line, not a traceback
        log.error("%s", e)
        return e.exit_code
    except OSError as e:  # the report's directory is read-only, full, ...
        log.error("cannot write the report to %s: %s (choose another place with --out)",
                  args.out or args.path / "report", e.strerror or e)
        return 1
    listing = "".join(f"{name}: {p}\n" for name, p in written.items())
    tables = [written[name].read_text(encoding="utf-8") for name in ("runs.md", "points.md") if name in written]
    sys.stdout.write(listing + "\n" + "\n".join(tables))  # the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
