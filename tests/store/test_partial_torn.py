"""A torn partial file (a half-written last line: a full disk, a host crash) keeps only whole batches, by the batch
sizes it records, so the resumed stage draws the torn batch again as it was batched and ends byte-identical to an
uninterrupted run; a partial file whose header is unreadable is said, not deleted silently."""

import logging

import pytest

from tests.support.faulty_stage import BATCH_SIZE, run_stage
from thinkswitch.store import partial
from thinkswitch.store.partial import PartialResults, partial_path


class Killed(Exception):
    pass


def test_a_torn_batch_is_dropped_whole_and_the_file_cut_before_it(tmp_path):
    out = tmp_path / "generations.jsonl"
    p = PartialResults(out, key="k")
    p.append({0: {"output": "a"}, 1: {"output": "b"}})
    p.append({2: {"output": "c"}, 3: {"output": "d"}, 4: {"output": "e"}})
    p.close()
    whole = partial_path(out).read_bytes()
    cut = whole.rindex(b'{"index": 4')  # rows 2 and 3 whole, row 4 torn
    partial_path(out).write_bytes(whole[: cut + 9])
    again = PartialResults(out, key="k")
    assert again.done == {0: {"output": "a"}, 1: {"output": "b"}}, "rows 2 and 3 go with their torn batch"
    assert partial_path(out).read_bytes() == whole[: whole.index(b'{"index": 2')]
    again.append({2: {"output": "c"}, 3: {"output": "d"}, 4: {"output": "e"}})
    again.close()
    assert partial_path(out).read_bytes() == whole


@pytest.mark.parametrize("header", [b'{"partial": "thinks', b'not json\n{"index": 0}\n', b'[1, 2]\n'])
def test_an_unreadable_header_is_said_before_the_file_is_discarded(tmp_path, caplog, header):
    out = tmp_path / "eval_thinking.jsonl"
    partial_path(out).write_bytes(header)
    with caplog.at_level(logging.WARNING, logger="thinkswitch.store.partial"):
        assert PartialResults(out, key="k").done == {}
    assert not partial_path(out).exists()
    assert "eval_thinking.jsonl.partial: its header is unreadable" in caplog.text
    assert "the stage starts over" in caplog.text


@pytest.mark.slow
def test_a_stage_resumed_from_a_partial_file_torn_mid_batch_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    reference = tmp_path / "reference" / "generations.jsonl"
    run_stage("generate", reference)

    batches: list[dict] = []

    def kill_after_two(path, results):
        batches.append(results)
        if len(batches) == 2:
            raise Killed

    out = tmp_path / "run" / "generations.jsonl"
    monkeypatch.setattr(partial, "AFTER_BATCH", [kill_after_two])
    with pytest.raises(Killed):
        run_stage("generate", out)
    data = partial_path(out).read_bytes()
    lines = data.splitlines(keepends=True)
    assert len(lines) == 1 + 2 * BATCH_SIZE
    torn = b"".join(lines[: 1 + BATCH_SIZE + 3]) + lines[1 + BATCH_SIZE + 3][:20]  # batch 2: 3 rows and a half
    partial_path(out).write_bytes(torn)

    sizes: list[int] = []
    monkeypatch.setattr(partial, "AFTER_BATCH", [lambda path, results: sizes.append(len(results))])
    metrics = run_stage("generate", out)
    assert metrics["generate/resumed_outputs"] == BATCH_SIZE, "only the whole first batch was kept"
    assert sizes == [BATCH_SIZE] * 3, "the torn batch was drawn again whole, with its batching"
    assert out.read_bytes() == reference.read_bytes()
