"""The report's plots: accuracy by iteration per run, and final accuracy against a swept key (seeds pooled).
matplotlib's pyplot is passed in by the caller, which picks the backend.
"""

from __future__ import annotations

from pathlib import Path

from thinkswitch.analysis.console import role_scores
from thinkswitch.analysis.runs import CONFIG_KEYS
from thinkswitch.analysis.tables import aggregate, as_label, is_number
from thinkswitch.config import Role
from thinkswitch.store.io import atomic_path

PLOTS = {"final_accuracy_vs_t.png": "merge.t", "final_accuracy_vs_train_prompts.png": "domain.train_prompts"}


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_iterations(plt, runs: list[dict], rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (run, row) in enumerate(zip(runs, rows)):
        shift = (i - (len(runs) - 1) / 2) * 0.02  # keeps overlapping error bars apart
        for role, style, marker in zip(Role, ("-", "--"), ("o", "s")):
            points = [(h["iteration"] + shift, role_scores(h, role)) for h in run["history"] if f"{role}/n" in h]
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


def plot_final(plt, rows: list[dict], runs: list[dict], x_key: str, path: Path) -> str | None:
    """Final accuracy against `x_key`; returns why it was skipped, or None when written."""
    done = [(r, run) for r, run in zip(rows, runs) if r["status"] == "finished" and r[x_key] is not None]
    xs = {as_label(r[x_key]) for r, _ in done}
    if len(xs) < 2:
        return f"{x_key} takes {len(xs)} distinct value(s) over the finished runs"
    labels = [a[0] for a in aggregate([r for r, _ in done], x_key, "instruct/final/accuracy")]
    numeric = all(is_number(x) for x in labels)
    pos = {x: (x if numeric else i) for i, x in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = _series(*zip(*done), x_key)
    for j, (rest, group) in enumerate(series.items()):
        for role, style, marker in zip(Role, ("-", "--"), ("o", "s")):
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
