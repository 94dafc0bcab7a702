"""Human-readable tables of a run's results, and reports (CSV, Markdown, plots) over runs and sweeps.

`python -m thinkswitch.analysis.report <run or sweep dir> [--out DIR]` (console script `thinkswitch-report`).
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

from thinkswitch.analysis.stats import CHANGE_FIELDS, excludes_zero, paired_change, question_scores, wilson_interval
from thinkswitch.config import ROLES
from thinkswitch.store.io import atomic_path, read_json, read_jsonl, write_json, write_text
from thinkswitch.store.paths import RunPaths

log = logging.getLogger(__name__)
CONFIG_KEYS = ("merge.t", "domain.train_prompts", "seed", "domain.name", "model.name", "trainer.name")
SCORE_FIELDS = ("correct", "n", "accuracy", "ci_low", "ci_high", "tokens_per_answer")
DELTA_FIELDS = ("flips_up", "flips_down", "p_mcnemar", "ci_low", "ci_high")  # beside `<role>/delta_accuracy`
PLOTS = {"final_accuracy_vs_t.png": "merge.t", "final_accuracy_vs_train_prompts.png": "domain.train_prompts"}


def _format(s: dict, width: str = "") -> str:
    """`191/500 38.2% [34.0%, 42.5%]` from `_scores` fields; `width` pads the accuracy for tables."""
    return f"{s['correct']}/{s['n']} {s['accuracy']:{width}.1%} [{s['ci_low']:.1%}, {s['ci_high']:.1%}]"


def score(row: dict, role: str) -> str:
    """correct/n, accuracy and its 95% Wilson interval, from one line of metrics.jsonl."""
    return _format(_scores(row, role), width="6")


def _change(c: dict | None, pad: bool = True) -> str:
    """`+15.0 [+11.0, +19.2]* +90/-15`: accuracy points, paired 95% interval (* if it excludes 0), flips;
    `pad` keeps a column for the mark when there is none (tables)."""
    if not c or c.get("delta") is None:
        return ""
    mark = "*" if excludes_zero(c) else " " if pad else ""
    return (f"{100 * c['delta']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]{mark} "
            f"+{c['flips_up']}/-{c['flips_down']}")


def _row_change(row: dict, role: str) -> dict | None:
    """The `<role>/change/*` metrics of one line of metrics.jsonl (vs the previous iteration), or None."""
    if f"{role}/change/delta" not in row:
        return None
    return {f: row.get(f"{role}/change/{f}") for f in CHANGE_FIELDS}


CHANGE_LEGEND = ("change: accuracy points vs the previous iteration [paired bootstrap 95% interval], +up/-down: "
                 "questions that flipped;\n* the interval excludes 0 (McNemar p-values: metrics.jsonl, summary.json)")


def iteration_table(history: list[dict], paired: dict | None = None) -> str:
    """Iteration x {instruct, thinking}: correct/n, accuracy [95% CI], tokens per answer and, when the rows
    have them, the paired change from the previous iteration; `paired` (summary.json's block) adds a line
    per checkpoint for the change from iteration 0."""
    cells = [[score(row, r) for r in ROLES] for row in history]
    width = max(len(c) for row in cells for c in row)
    changes = [[_change(_row_change(row, r)) for r in ROLES] for row in history]
    cw = max((len(c) for row in changes for c in row), default=0)
    extra = f" {'change':<{cw}}" if cw else ""
    header = f"iter | {'instruct':<{width}} tok/ans{extra} | {'thinking':<{width}} tok/ans{extra}".rstrip()
    lines = [header, "-" * len(header)]
    for row, (inst, think), (ci, ct) in zip(history, cells, changes):
        lines.append(f"{row['iteration']:>4} | {inst:<{width}} {row['instruct/tokens_per_answer']:7.1f}"
                     f"{f' {ci:<{cw}}' if cw else ''} | "
                     f"{think:<{width}} {row['thinking/tokens_per_answer']:7.1f}{f' {ct:<{cw}}' if cw else ''}"
                     .rstrip())
    finals = []
    for role in ROLES:
        c = (paired or {}).get(role)
        if c and c.get("delta") is not None:
            finals.append(f"{role} {_change(c, pad=False)} (McNemar p={c['p_mcnemar']:.3g})")
    if finals:
        lines.append(f"iteration {paired[ROLES[0]].get('after', history[-1]['iteration'])} vs 0: "
                     + "; ".join(finals))
    if cw or finals:
        lines.append(CHANGE_LEGEND)
    return "\n".join(lines)


# ---------------------------------------------------------------- paired changes from a run's files


def eval_scores(run_dir: Path, k: int, role: str) -> dict[str, float] | None:
    """id -> correctness (mean over samples) of `role` at iteration k, from iter_XX/eval_<role>.jsonl (or None)."""
    path = RunPaths(Path(run_dir)).iteration(k).eval_results(role)
    return question_scores(read_jsonl(path), str(path)) if path.is_file() else None


def _paired(run_dir: Path, before: int, after: int, role: str) -> dict | None:
    a, b = eval_scores(run_dir, before, role), eval_scores(run_dir, after, role)
    if a is None or b is None:
        return None
    try:
        return paired_change(a, b)
    except ValueError as e:
        raise ValueError(f"{run_dir}: iterations {before} and {after} of {role}: {e}") from None


def change_metrics(run_dir: Path, k: int) -> dict:
    """`<role>/change/<field>` for iteration k vs k-1 (flips_up, flips_down, delta, p_mcnemar, ci_low,
    ci_high), from the per-question files; {} for iteration 0 or when a file is missing."""
    out = {}
    for role in ROLES:
        c = _paired(run_dir, k - 1, k, role) if k > 0 else None
        if c:
            out |= {f"{role}/change/{f}": v for f, v in c.items() if f != "n"}
    return out


def paired_block(run_dir: Path, history: list[dict]) -> dict:
    """summary.json's `paired`: per checkpoint, the paired change of accuracy from iteration 0 to the last
    iteration of `history` ({before, after, n, flips_up, flips_down, delta, p_mcnemar, ci_low, ci_high})."""
    if not history:
        return {}
    first, last = history[0]["iteration"], history[-1]["iteration"]
    out = {}
    for role in ROLES:
        c = _paired(run_dir, first, last, role)
        if c:
            out[role] = {"before": first, "after": last, **c}
    return out


def paired_run_summary(summary: dict) -> dict:
    """The paired block flattened for W&B's run summary: `delta/<role>/<field>` (p_mcnemar, ci_low, ...)."""
    return {f"delta/{role}/{f}": v for role, c in (summary.get("paired") or {}).items()
            for f, v in c.items() if f in CHANGE_FIELDS and f != "n"}


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
    history = read_jsonl(run_dir / "metrics.jsonl")
    # the change from iteration 0: as the run recorded it, else from its per-question files (unfinished runs)
    paired = (summary or {}).get("paired") or paired_block(run_dir, history)
    return {"dir": run_dir, "overrides": overrides, "config": config, "history": history,
            "summary": summary, "failure": failure, "status": status, "paired": paired}


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
            change = (run.get("paired") or {}).get(role) or {}  # paired: final vs baseline, same questions
            row.update({f"{role}/delta/{f}": change.get(f) for f in DELTA_FIELDS})
            row[f"{role}/delta/significant"] = excludes_zero(change) if change else None
            for when, metrics in (("baseline", history[0] if history else {}),
                                  ("final", history[-1] if history else {})):
                row[f"{role}/{when}/macro_f1"] = metrics.get(f"{role}/macro_f1")
        row["majority_baseline"] = history[0].get("eval/majority_baseline") if history else None
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


def _fmt_delta(row: dict, role: str) -> str:
    """`+10.0 [+3.0, +17.0]* p=0.004 +12/-2` (points) from a runs_table row; `-` without the paired change."""
    p = f"{role}/delta"
    if row.get(f"{p}/ci_low") is None:
        return "-"
    change = {"delta": row[f"{role}/delta_accuracy"], **{f: row[f"{p}/{f}"] for f in DELTA_FIELDS}}
    return f"{_change(change, pad=False)} p={change['p_mcnemar']:.2g}"


def _has_labels(rows: list[dict]) -> bool:
    return any(r.get("majority_baseline") is not None for r in rows)


def markdown_table(rows: list[dict]) -> str:
    """runs.md: one line per run, baseline -> final for both checkpoints, and the paired change of each."""
    def tok(r: dict, role: str) -> str:
        b, f = r[f"{role}/baseline/tokens_per_answer"], r[f"{role}/final/tokens_per_answer"]
        return "-" if b is None else f"{b:.1f}->{f:.1f}"

    def f1(r: dict) -> str:
        vals = [r.get(f"{role}/final/macro_f1") for role in ROLES]
        return "; ".join("-" if v is None else f"{v:.3f}" for v in vals)

    labels = _has_labels(rows)
    head = ["run", "t", "train_prompts", "seed", "instruct baseline -> final", "instruct change",
            "thinking baseline -> final", "thinking change", "tokens/answer (inst; think)",
            *(["macro-F1 final (inst; think)", "majority baseline"] if labels else []), "cost", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], r["merge.t"], r["domain.train_prompts"], r["seed"],
                 *(c for role in ROLES
                   for c in (f"{_fmt_score(r, role, 'baseline')} -> {_fmt_score(r, role, 'final')}",
                             _fmt_delta(r, role))),
                 f"{tok(r, 'instruct')}; {tok(r, 'thinking')}",
                 *([f1(r), "-" if r["majority_baseline"] is None else f"{r['majority_baseline']:.1%}"]
                   if labels else []),
                 "-" if r["cost_usd"] is None else f"${r['cost_usd']:.2f}",
                 r["status"] if r["status"] == "finished" or r["iterations"] is None
                 else f"{r['status']} (iter {r['iterations']})"]
        lines.append("| " + " | ".join("-" if c is None else str(c).replace("|", "\\|") for c in cells) + " |")
    lines += ["", "change: final vs baseline accuracy in points [paired bootstrap 95% interval], +up/-down "
              "questions that flipped, p: McNemar's exact test; * the interval excludes 0."]
    if labels:
        lines.append("majority baseline: the accuracy of always answering the evaluation set's most common gold "
                     "label; macro-F1 over yes/no/maybe.")
    return "\n".join(lines) + "\n"


def points_table(rows: list[dict], runs: list[dict]) -> list[dict]:
    """Finished runs pooled over seeds: one row per point (every override but `seed`) with the number of seeds,
    and per checkpoint the mean change from baseline with its lo/hi (as `aggregate`: the min and max over
    seeds; one seed: its paired 95% interval) and how many seeds' own interval excludes 0."""
    done = [(row, run) for row, run in zip(rows, runs) if row["status"] == "finished"]
    points = {}
    for row, run in done:
        point = ",".join(f"{k}={v}" for k, v in run["overrides"].items() if k != "seed") or "(all)"
        points.setdefault(point, []).append(row)
    out = []
    for point, group in points.items():
        entry = {"point": point, "seeds": len(group)}
        for role in ROLES:
            ys = [{"point": point, "d/accuracy": r[f"{role}/delta_accuracy"], "d/ci_low": r[f"{role}/delta/ci_low"],
                   "d/ci_high": r[f"{role}/delta/ci_high"]} for r in group]
            agg = aggregate(ys, "point", "d/accuracy")
            _, mean, lo, hi, _ = agg[0] if agg else (None, None, None, None, 0)
            entry |= {f"{role}/delta_mean": mean, f"{role}/delta_lo": lo, f"{role}/delta_hi": hi,
                      f"{role}/seeds_significant": sum(bool(r[f"{role}/delta/significant"]) for r in group)}
        out.append(entry)
    return out


def points_markdown(points: list[dict]) -> str:
    """points.md: the change from baseline per point, seeds pooled."""
    def cell(p: dict, role: str) -> str:
        if p[f"{role}/delta_mean"] is None:
            return "-"
        return (f"{100 * p[f'{role}/delta_mean']:+.1f} [{100 * p[f'{role}/delta_lo']:+.1f}, "
                f"{100 * p[f'{role}/delta_hi']:+.1f}] ({p[f'{role}/seeds_significant']}/{p['seeds']} *)")

    lines = ["| point | seeds | instruct change | thinking change |", "|---|---|---|---|"]
    lines += [f"| {p['point']} | {p['seeds']} | {cell(p, 'instruct')} | {cell(p, 'thinking')} |" for p in points]
    lines += ["", "change: final vs baseline accuracy in points, mean over seeds [lowest, highest seed; one seed: its "
              "paired bootstrap 95% interval] (k/n *: seeds whose own paired interval excludes 0)."]
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
    points = points_table(rows, runs)
    if any(p["seeds"] > 1 for p in points):  # seeds to pool
        written["points.csv"], written["points.md"] = out_dir / "points.csv", out_dir / "points.md"
        write_text(written["points.csv"], _csv(points))
        write_text(written["points.md"], points_markdown(points))
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
    tables = [written[name].read_text(encoding="utf-8") for name in ("runs.md", "points.md") if name in written]
    sys.stdout.write(listing + "\n" + "\n".join(tables))  # the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
