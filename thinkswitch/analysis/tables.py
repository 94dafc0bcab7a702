"""The report's tables over runs: one row per run (runs.csv, runs.md), seeds pooled per point (points.csv,
points.md), and `aggregate`, which the plots share.
"""

from __future__ import annotations

import csv
import json
from io import StringIO
from typing import Any

from thinkswitch.analysis.console import SCORE_FIELDS, format_change, format_score, role_scores
from thinkswitch.analysis.stats import excludes_zero
from thinkswitch.config import Role

DELTA_FIELDS = ("flips_up", "flips_down", "p_mcnemar", "ci_low", "ci_high")  # beside `<role>/delta_accuracy`


def as_label(value: Any) -> Any:
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
               "dir": str(run["dir"]), **{k: as_label(v) for k, v in run["config"].items()}, "status": run["status"],
               "error": (run["failure"] or {}).get("error"),
               "iterations": history[-1]["iteration"] if history else None}
        for role in Role:
            for when, metrics in (("baseline", history[0] if history else None),
                                  ("final", history[-1] if history else None)):
                row.update({f"{role}/{when}/{f}": v for f, v in role_scores(metrics, role).items()})
            base, final = row[f"{role}/baseline/accuracy"], row[f"{role}/final/accuracy"]
            row[f"{role}/delta_accuracy"] = None if base is None else final - base
            # paired: final vs baseline, same questions (none where the run has only its baseline: iterations=0)
            change = (run.get("paired") or {}).get(role) or {} if len(history) > 1 else {}
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


def is_number(x: Any) -> bool:
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
            groups.setdefault(as_label(row[x_key]), []).append(row)
    out = []
    for x, group in groups.items():
        ys = [r[y_key] for r in group]
        mean = sum(ys) / len(ys)
        if len(group) > 1:
            lo, hi = min(ys), max(ys)
        else:
            lo, hi = group[0].get(f"{prefix}/ci_low", mean), group[0].get(f"{prefix}/ci_high", mean)
        out.append((x, mean, lo, hi, len(group)))
    return sorted(out, key=lambda a: (not is_number(a[0]), a[0] if is_number(a[0]) else 0, str(a[0])))


def _fmt_score(row: dict, role: str, when: str) -> str:
    p = f"{role}/{when}"
    if row[f"{p}/n"] is None:
        return "-"
    return format_score({f: row[f"{p}/{f}"] for f in SCORE_FIELDS})


def _fmt_delta(row: dict, role: str) -> str:
    """`+10.0 [+3.0, +17.0]* p=0.004 +12/-2` (points) from a runs_table row; `-` without the paired change."""
    p = f"{role}/delta"
    if row.get(f"{p}/ci_low") is None:
        return "-"
    change = {"delta": row[f"{role}/delta_accuracy"], **{f: row[f"{p}/{f}"] for f in DELTA_FIELDS}}
    return f"{format_change(change, pad=False)} p={change['p_mcnemar']:.2g}"


def _has_labels(rows: list[dict]) -> bool:
    return any(r.get("majority_baseline") is not None for r in rows)


def markdown_table(rows: list[dict]) -> str:
    """runs.md: one line per run, baseline -> final for both checkpoints, and the paired change of each."""
    def tok(r: dict, role: str) -> str:
        b, f = r[f"{role}/baseline/tokens_per_answer"], r[f"{role}/final/tokens_per_answer"]
        return "-" if b is None else f"{b:.1f}->{f:.1f}"

    def f1(r: dict) -> str:
        vals = [r.get(f"{role}/final/macro_f1") for role in Role]
        return "; ".join("-" if v is None else f"{v:.3f}" for v in vals)

    labels = _has_labels(rows)
    head = ["run", "t", "train_prompts", "seed", "instruct baseline -> final", "instruct change",
            "thinking baseline -> final", "thinking change", "tokens/answer (inst; think)",
            *(["macro-F1 final (inst; think)", "majority baseline"] if labels else []), "cost", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], r["merge.t"], r["domain.train_prompts"], r["seed"],
                 *(c for role in Role
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
        for role in Role:
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


def to_csv(rows: list[dict]) -> str:
    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
