"""Long stages resume mid-stage: generation and evaluation keep every finished batch in a partial file; a run
SIGKILLed between batches and run again finishes with an uninterrupted run's outputs, generating only the missing
batches. The partial file's format: torn lines dropped, other settings never reused."""

import json
import signal

import pytest

from tests.support import cli
from tests.support.faulty_stage import BATCH_SIZE, PROMPTS, SAMPLES, run_stage
from thinkswitch.store import partial
from thinkswitch.store.io import read_jsonl
from thinkswitch.store.partial import PartialResults, partial_path


@pytest.fixture
def count_batches(monkeypatch):
    sizes: list[int] = []
    monkeypatch.setattr(partial, "AFTER_BATCH", [lambda path, results: sizes.append(len(results))])
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["generate", "evaluate"])
def test_killed_between_batches_then_rerun_equals_an_uninterrupted_run(stage, tmp_path, count_batches):
    total = PROMPTS[stage] * SAMPLES[stage]
    reference = tmp_path / "reference" / f"{stage}.jsonl"
    ref_metrics = run_stage(stage, reference)
    assert count_batches == [BATCH_SIZE] * 4 and not partial_path(reference).exists()
    expected = read_jsonl(reference)
    assert len(expected) == total and len({r["output"] for r in expected}) > PROMPTS[stage]  # sampled: varied

    out = tmp_path / "run" / f"{stage}.jsonl"
    proc = cli.python("-m", "tests.support.faulty_stage", stage, out, 2, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not out.exists(), "a killed stage never writes its final output"
    lines = partial_path(out).read_text().splitlines()
    assert len(lines) == 1 + 2 * BATCH_SIZE, "header + the two finished batches, each one line per result"
    with open(partial_path(out), "a") as f:  # as if a third batch had been killed while being written
        f.write('{"index": 3, "output": "1+2=')

    count_batches.clear()
    metrics = run_stage(stage, out)
    assert count_batches == [BATCH_SIZE] * 2, "only the two missing batches were generated (none redone)"
    assert read_jsonl(out) == expected
    assert not partial_path(out).exists(), "the partial file is removed once the output is written"
    if stage == "generate":
        assert metrics["generate/resumed_outputs"] == 2 * BATCH_SIZE and ref_metrics["generate/resumed_outputs"] == 0
    if stage == "evaluate":
        keys = [k for k in ref_metrics if not k.endswith("_seconds")]
        assert {k: metrics[k] for k in keys} == {k: ref_metrics[k] for k in keys}


def test_a_partial_file_drops_a_torn_line_and_keeps_whole_ones(tmp_path):
    out = tmp_path / "generations.jsonl"
    p = PartialResults(out, key="k1")
    assert p.done == {}
    p.append({0: {"output": "a", "tokens": 1}, 1: {"output": "b", "tokens": 2}})
    p.close()
    with open(partial_path(out), "a") as f:
        f.write('{"index": 2, "outp')  # killed mid-write
    again = PartialResults(out, key="k1")
    assert again.done == {0: {"output": "a", "tokens": 1}, 1: {"output": "b", "tokens": 2}}
    again.append({2: {"output": "c", "tokens": 3}})  # appended after the whole lines, not after the torn piece
    again.close()
    rows = [json.loads(line) for line in partial_path(out).read_text().splitlines()]
    assert rows[0] == {"partial": "thinkswitch", "key": "k1", "batching": None}
    assert [r["index"] for r in rows[1:]] == [0, 1, 2]
    assert PartialResults(out, key="k1").done[2] == {"output": "c", "tokens": 3}


def test_a_partial_file_of_other_settings_is_never_reused(tmp_path):
    out = tmp_path / "eval_thinking.jsonl"
    p = PartialResults(out, key="seed=1")
    p.append({0: {"output": "a", "tokens": 1}})
    p.close()
    other = PartialResults(out, key="seed=2")
    assert other.done == {} and not partial_path(out).exists()
    partial_path(out).write_text('{"partial": "thinks')  # a torn header: nothing to trust
    assert PartialResults(out, key="seed=2").done == {} and not partial_path(out).exists()
