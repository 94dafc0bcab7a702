"""What the tests read back from a run directory."""

from __future__ import annotations

from thinkswitch.store.io import read_json


def reused(run_dir) -> set[str]:
    """The stages a run restored from the stage cache (its `cache/<stage>` metrics)."""
    return {f"{m.parent.name}/{k.split('/')[1]}" for m in run_dir.glob("iter_*/metrics.json")
            for k in read_json(m) if k.startswith("cache/")}
