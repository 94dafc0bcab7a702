"""Smaller things a run says: `iterations=0`'s table has no "iteration 0 vs 0" line; a changed input is logged with
which input changed. (cb's INFO lines: tests/test_cb_resume.py; the distillation's FutureWarning:
tests/test_stop_signals.py; an unreadable partial header: tests/test_partial_torn.py.)"""

import json

from tests.support.runs import make_run
from thinkswitch.analysis.console import iteration_table
from thinkswitch.analysis.paired import change_metrics, paired_block


def test_an_iterations_0_table_has_no_line_comparing_iteration_0_with_itself(tmp_path):
    run = make_run(tmp_path / "run", {}, [((40, 100), (90, 100))], iterations=0)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    history = [{**row, **change_metrics(run, row["iteration"])} for row in history]
    table = iteration_table(history, paired_block(run, history))
    assert "vs 0" not in table and "McNemar" not in table, table
    assert table.splitlines()[2].startswith("   0 |")


def test_a_changed_input_is_named(tmp_path):
    from tests.support.shared import compose
    from thinkswitch.stages.inputs import Artifact, field_keys, stage_key
    from thinkswitch.stages.merge import MergeInputs
    from thinkswitch.store.paths import IterationPaths
    from thinkswitch.store.runner import changed_inputs

    cfg = compose([]).merge
    before, after = (MergeInputs(thinking=Artifact("t", "id-t"), instruct=Artifact("i", instruct), cfg=cfg,
                                 shard_size=1, out=tmp_path) for instruct in ("id-1", "id-2"))
    it = IterationPaths(tmp_path)
    it.mark_done("merge", {"inputs": stage_key(before, "marker"), "input_fields": field_keys(before)})
    assert changed_inputs(it, "merge", stage_key(before, "marker"), field_keys(before)) is None
    assert changed_inputs(it, "merge", stage_key(after, "marker"), field_keys(after)) == \
        "its input instruct changed since it ran (an earlier stage was redone, or an input was replaced)"
    it.mark_done("merge", {"inputs": stage_key(before, "marker")})  # a marker of a version without fields
    assert changed_inputs(it, "merge", stage_key(after, "marker"), field_keys(after)).startswith(
        "its inputs changed since it ran")
