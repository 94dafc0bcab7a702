"""Human-readable tables of a run's results, and reports (CSV, Markdown, plots) over runs and sweeps.

`python -m thinkswitch.report <run or sweep dir> [--out DIR]` (console script `thinkswitch-report`).
Hydra is not imported: a run is read from the files it leaves (.hydra/*.yaml, metrics.jsonl, summary.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import yaml

from thinkswitch.chat import ROLES
from thinkswitch.io import atomic_path, read_json, read_jsonl, write_json, write_text
from thinkswitch.stats import wilson_interval

log = logging.getLogger(__name__)
CONFIG_KEYS = ("merge.t", "domain.train_prompts", "seed", "domain.name", "model.name", "trainer.name")
SCORE_FIELDS = ("correct", "n", "accuracy", "ci_low", "ci_high", "tokens_per_answer")
PLOTS = {"final_accuracy_vs_t.png": "merge.t", "final_accuracy_vs_train_prompts.png": "domain.train_prompts"}


def _format(s: dict, width: str = "") -> str:
    """`191/500 38.2% [34.0%, 42.5%]` from `_scores` fields; `width` pads the accuracy for tables."""
    return f"{s['correct']}/{s['n']} {s['accuracy']:{width}.1%} [{s['ci_low']:.1%}, {s['ci_high']:.1%}]"


def score(row: dict, role: str) -> str:
    """correct/n, accuracy and its 95% Wilson interval, from one line of metrics.jsonl."""
    return _format(_scores(row, role), width="6")


def iteration_table(history: list[dict]) -> str:
    """Iteration x {instruct, thinking}: correct/n, accuracy [95% CI] and tokens per answer."""
    cells = [[score(row, r) for r in ROLES] for row in history]
    width = max(len(c) for row in cells for c in row)
    header = f"iter | {'instruct':<{width}} tok/ans | {'thinking':<{width}} tok/ans"
    lines = [header, "-" * len(header)]
    for row, (inst, think) in zip(history, cells):
        lines.append(f"{row['iteration']:>4} | {inst:<{width}} {row['instruct/tokens_per_answer']:7.1f} | "
                     f"{think:<{width}} {row['thinking/tokens_per_answer']:7.1f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- reading runs


def _sort_key(path: Path) -> tuple:
    """Hydra's job dirs `<num>_<overrides>` in job order (10 after 9), then by name."""
    m = re.match(r"(\d+)_", path.name)
    return (int(m.group(1)) if m else float("inf"), path.name)


def find_runs(path: Path) -> list[Path]:
    """`path` itself if it is a run dir (holds metrics.jsonl), else every run dir below it, in job order.

    Runs without summary.json (still running, stopped or failed) are included; `load_run` gives their status.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    if (path / "metrics.jsonl").is_file():
        if not (path / "summary.json").is_file():
            log.info("%s: no summary.json, reporting the iterations it finished", path)
        return [path]
    runs = []
    for child in sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_sort_key):
        if (child / ".hydra").is_dir() and not (child / "metrics.jsonl").is_file():
            log.info("skipping %s: no metrics.jsonl (the job never finished its baseline)", child)
        else:
            runs += find_runs(child)
    return runs


def _dig(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def load_run(run_dir: Path) -> dict:
    """One run as a dict: dir, overrides (key -> value string), config (CONFIG_KEYS), history, summary, status."""
    run_dir = Path(run_dir)
    hydra = run_dir / ".hydra"
    overrides: dict[str, str] = {}
    if (hydra / "overrides.yaml").is_file():
        for item in yaml.safe_load((hydra / "overrides.yaml").read_text()) or []:
            key, _, value = str(item).partition("=")
            overrides[key] = value
    composed = yaml.safe_load((hydra / "config.yaml").read_text()) if (hydra / "config.yaml").is_file() else {}
    config = {k: _dig(composed, k) for k in CONFIG_KEYS}
    for k in CONFIG_KEYS:  # no config.yaml: fall back on the command line (typed by YAML, as Hydra does)
        if config[k] is None and k in overrides:
            config[k] = yaml.safe_load(overrides[k])
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    failure = read_json(run_dir / "failed.json") if (run_dir / "failed.json").is_file() else None
    status = "finished" if summary else "failed" if failure else "unfinished"  # summary.json is written last
    return {"dir": run_dir, "overrides": overrides, "config": config, "history": read_jsonl(run_dir / "metrics.jsonl"),
            "summary": summary, "failure": failure, "status": status}


def _scores(row: dict | None, role: str) -> dict:
    """correct, n, accuracy, 95% Wilson interval (computed when the metrics predate it), tokens/answer."""
    if row is None or f"{role}/n" not in row:
        return dict.fromkeys(SCORE_FIELDS)
    c, n = row[f"{role}/correct"], row[f"{role}/n"]
    low, high = wilson_interval(c, n)
    return {"correct": c, "n": n, "accuracy": row.get(f"{role}/accuracy", c / n if n else 0.0),
            "ci_low": row.get(f"{role}/accuracy_ci_low", low), "ci_high": row.get(f"{role}/accuracy_ci_high", high),
            "tokens_per_answer": row.get(f"{role}/tokens_per_answer")}


def _label(value: Any) -> Any:
    """Numbers and strings as they are; anything else (a mergekit gradient `t: [0, 0.5, 1]`) as compact JSON."""
    return value if value is None or isinstance(value, (int, float, str)) else json.dumps(value)


def runs_table(runs: list[dict]) -> list[dict]:
    """One flat row per run: name, config values, status, and baseline/final/delta of both checkpoints."""
    rows = []
    keys = {k for run in runs for k in run["overrides"]}
    varying = [k for k in sorted(keys) if len({run["overrides"].get(k) for run in runs}) > 1] if len(runs) > 1 else []
    for run in runs:
        history, summary = run["history"], run["summary"] or {}
        shown = {k: v for k, v in run["overrides"].items() if not varying or k in varying}  # what tells runs apart
        row = {"name": ",".join(f"{k}={v}" for k, v in shown.items()) or run["dir"].name,
               "dir": str(run["dir"]), **{k: _label(v) for k, v in run["config"].items()}, "status": run["status"],
               "error": (run["failure"] or {}).get("error"),
               "iterations": history[-1]["iteration"] if history else None}
        for role in ROLES:
            for when, metrics in (("baseline", history[0] if history else None),
                                  ("final", history[-1] if history else None)):
                row.update({f"{role}/{when}/{f}": v for f, v in _scores(metrics, role).items()})
            base, final = row[f"{role}/baseline/accuracy"], row[f"{role}/final/accuracy"]
            row[f"{role}/delta_accuracy"] = None if base is None else final - base
        row["cost_usd"] = (summary.get("cost_usd") or {}).get("total")
        if row["cost_usd"] is None and any("cost/iteration_usd" in h for h in history):
            row["cost_usd"] = sum(h.get("cost/iteration_usd", 0.0) for h in history)
        row["wall_seconds"] = summary.get("wall_seconds")
        rows.append(row)
    return rows


# ---------------------------------------------------------------- aggregating and writing


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def aggregate(rows: list[dict], x_key: str, y_key: str) -> list[tuple[Any, float, float, float, int]]:
    """(x, mean y, lo, hi, n runs) per distinct x, sorted by x (numbers first, then labels).

    Several runs at one x (seeds): lo/hi are the min and max of their y. A single run: lo/hi are its
    Wilson interval, taken from the row's `<prefix>/ci_low` and `<prefix>/ci_high` beside `<prefix>/<y>`
    (y itself when the row has none). Rows whose x or y is missing are left out.
    """
    prefix = y_key.rpartition("/")[0]
    groups: dict[Any, list[dict]] = {}
    for row in rows:
        if row.get(x_key) is not None and row.get(y_key) is not None:
            groups.setdefault(_label(row[x_key]), []).append(row)
    out = []
    for x, group in groups.items():
        ys = [r[y_key] for r in group]
        mean = sum(ys) / len(ys)
        if len(group) > 1:
            lo, hi = min(ys), max(ys)
        else:
            lo, hi = group[0].get(f"{prefix}/ci_low", mean), group[0].get(f"{prefix}/ci_high", mean)
        out.append((x, mean, lo, hi, len(group)))
    return sorted(out, key=lambda a: (not _is_number(a[0]), a[0] if _is_number(a[0]) else 0, str(a[0])))


def _fmt_score(row: dict, role: str, when: str) -> str:
    p = f"{role}/{when}"
    if row[f"{p}/n"] is None:
        return "-"
    return _format({f: row[f"{p}/{f}"] for f in SCORE_FIELDS})


def markdown_table(rows: list[dict]) -> str:
    """runs.md: one line per run, baseline -> final for both checkpoints."""
    def tok(r: dict, role: str) -> str:
        b, f = r[f"{role}/baseline/tokens_per_answer"], r[f"{role}/final/tokens_per_answer"]
        return "-" if b is None else f"{b:.1f}->{f:.1f}"

    lines = [("| run | t | train_prompts | seed | instruct baseline -> final | thinking baseline -> final "
             "| tokens/answer (inst; think) | cost | status |"), "|" + "---|" * 9]
    for r in rows:
        cells = [r["name"], r["merge.t"], r["domain.train_prompts"], r["seed"],
                 *(f"{_fmt_score(r, role, 'baseline')} -> {_fmt_score(r, role, 'final')}" for role in ROLES),
                 f"{tok(r, 'instruct')}; {tok(r, 'thinking')}",
                 "-" if r["cost_usd"] is None else f"${r['cost_usd']:.2f}",
                 r["status"] if r["status"] == "finished" or r["iterations"] is None
                 else f"{r['status']} (iter {r['iterations']})"]
        lines.append("| " + " | ".join("-" if c is None else str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict]) -> str:
    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _plot_iterations(plt, runs: list[dict], rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (run, row) in enumerate(zip(runs, rows)):
        shift = (i - (len(runs) - 1) / 2) * 0.02  # keeps overlapping error bars apart
        for role, style, marker in zip(ROLES, ("-", "--"), ("o", "s")):
            points = [(h["iteration"] + shift, _scores(h, role)) for h in run["history"] if f"{role}/n" in h]
            xs, ss = [p[0] for p in points], [p[1] for p in points]
            ys = [s["accuracy"] for s in ss]
            err = [[y - s["ci_low"] for y, s in zip(ys, ss)], [s["ci_high"] - y for y, s in zip(ys, ss)]]
            ax.errorbar(xs, ys, yerr=err, linestyle=style, marker=marker, capsize=3, color=f"C{i % 10}",
                        label=f"{row['name']} ({role})")
    ax.set(xlabel="iteration", ylabel="accuracy (95% Wilson)", title="accuracy by iteration: instruct o-, thinking s--")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    _save(fig, path)
    plt.close(fig)


def _series(rows: list[dict], runs: list[dict], x_key: str) -> dict[str, list[dict]]:
    """Rows split by every setting but x and seed that varies between them: seeds are pooled, nothing else is."""
    settings = [{**{k: v for k, v in run["overrides"].items() if k not in CONFIG_KEYS},
                 **{k: row[k] for k in CONFIG_KEYS}} for row, run in zip(rows, runs)]
    keys = sorted({k for s in settings for k in s} - {x_key, "seed"})
    varying = [k for k in keys if len({str(s.get(k)) for s in settings}) > 1]
    out: dict[str, list[dict]] = {}
    for row, s in zip(rows, settings):
        out.setdefault(",".join(f"{k}={s.get(k)}" for k in varying), []).append(row)
    return out


def _plot_final(plt, rows: list[dict], runs: list[dict], x_key: str, path: Path) -> str | None:
    """Final accuracy against `x_key`; returns why it was skipped, or None when written."""
    done = [(r, run) for r, run in zip(rows, runs) if r["status"] == "finished" and r[x_key] is not None]
    xs = {_label(r[x_key]) for r, _ in done}
    if len(xs) < 2:
        return f"{x_key} takes {len(xs)} distinct value(s) over the finished runs"
    labels = [a[0] for a in aggregate([r for r, _ in done], x_key, "instruct/final/accuracy")]
    numeric = all(_is_number(x) for x in labels)
    pos = {x: (x if numeric else i) for i, x in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = _series(*zip(*done), x_key)
    for j, (rest, group) in enumerate(series.items()):
        for role, style, marker in zip(ROLES, ("-", "--"), ("o", "s")):
            agg = aggregate(group, x_key, f"{role}/final/accuracy")
            ax.errorbar([pos[a[0]] for a in agg], [a[1] for a in agg], linestyle=style, marker=marker, capsize=3,
                        yerr=[[a[1] - a[2] for a in agg], [a[3] - a[1] for a in agg]], color=f"C{j % 10}",
                        label=f"{role} {rest}".strip())
    if not numeric:
        ax.set_xticks(list(pos.values()), [str(x) for x in labels], rotation=20)
    ax.set(xlabel=x_key, ylabel="final accuracy", title=f"final accuracy vs {x_key}\n"
           "mean over seeds, bars: min-max (one seed: 95% Wilson); instruct o-, thinking s--")
    ax.legend(fontsize="small")
    _save(fig, path)
    plt.close(fig)
    return None


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
    write_text(written["runs.csv"], _csv(rows))
    write_text(written["runs.md"], markdown_table(rows))
    skipped = {}
    if any(run["history"] for run in runs):
        written["accuracy_vs_iteration.png"] = out_dir / "accuracy_vs_iteration.png"
        _plot_iterations(plt, [r for r in runs if r["history"]], [row for r, row in zip(runs, rows) if r["history"]],
                         written["accuracy_vs_iteration.png"])
    for name, x_key in PLOTS.items():
        why = _plot_final(plt, rows, runs, x_key, out_dir / name)
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
    listing = "".join(f"{name}: {p}\n" for name, p in written.items())
    sys.stdout.write(listing + "\n" + written["runs.md"].read_text(encoding="utf-8"))  # the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
