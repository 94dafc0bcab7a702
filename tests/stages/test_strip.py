"""Trace stripping: literal cases, malformed ones included."""

import pytest

from thinkswitch.config import DistillConfig
from thinkswitch.stages import strip
from thinkswitch.stages.inputs import Artifact
from thinkswitch.stages.strip import Status, select_pairs, strip_generations, strip_trace
from thinkswitch.store.io import read_jsonl, write_jsonl


@pytest.mark.parametrize(
    "text, answer, status",
    [
        # Qwen3-2507 thinking: `<think>` is in the prompt, the output holds only `</think>`
        ("6+0=6,+4=10\n</think>\n\n10", "10", Status.ok),
        # older Qwen3 style: both tags in the output
        ("<think>\nlet me add\n</think>\n\nThe answer is 12.", "The answer is 12.", Status.ok),
        # several closings: split on the last one
        ("a</think>b</think>  final ", "final", Status.ok),
        # a trace mentioning the tag literally, then the real close
        ("I should write </think> at the end.\n</think>\n42", "42", Status.ok),
        ("</think>42", "42", Status.ok),
        ("\n</think>\n\n\\boxed{7}\n", "\\boxed{7}", Status.ok),
        ("résumé </think> ✓ 答案 5", "✓ 答案 5", Status.ok),
        # cut off by max_new_tokens: never closed
        ("6+0=6,+4=10,+1=", None, Status.unfinished),
        ("<think>\nstill thinking", None, Status.unfinished),
        ("", None, Status.unfinished),
        ("42", None, Status.unfinished),
        ("<think></think", None, Status.unfinished),
        # closed, then reopened without closing
        ("x</think>42<think>more", None, Status.reopened),
        ("</think><think>", None, Status.reopened),
        # closed but nothing after it
        ("trace</think>", None, Status.empty),
        ("trace</think>\n\n  \n", None, Status.empty),
    ],
)
def test_strip_trace(text, answer, status):
    result = strip_trace(text)
    assert result.answer == answer
    assert result.status == status
    if result.answer is not None:
        assert "<think>" not in result.answer and "</think>" not in result.answer


def test_strip_generations_counts_and_drops(tmp_path):
    gens = tmp_path / "generations.jsonl"
    write_jsonl(gens, [
        {"id": "a", "sample": 0, "prompt": "p1", "output": "t</think>\n1"},
        {"id": "b", "sample": 0, "prompt": "p2", "output": "cut off"},
        {"id": "c", "sample": 0, "prompt": "p3", "output": "t</think>"},
        {"id": "d", "sample": 1, "prompt": "p4", "output": "t</think>2<think>x"},
    ])
    metrics = strip_generations(strip.StripInputs(generations=Artifact.at(gens), grader="last_integer",
                                            cfg=DistillConfig(), pairs=tmp_path / "pairs.jsonl"))
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert pairs == [{"id": "a", "sample": 0, "prompt": "p1", "completion": "1", "pred": "1"}]
    assert metrics["strip/generations"] == 4
    assert metrics["strip/pairs"] == 1
    assert metrics["strip/dropped"] == 3
    assert (metrics["strip/unfinished"], metrics["strip/empty"], metrics["strip/reopened"]) == (1, 1, 1)


def _rows(answers: dict[str, list[str]]) -> list[dict]:
    return [{"id": i, "sample": s, "prompt": i, "completion": a} for i, group in answers.items()
            for s, a in enumerate(group)]


def test_majority_keeps_the_agreeing_samples_and_drops_ties():
    rows = _rows({"p1": ["x 7", "7", "8"], "p2": ["1", "2"], "p3": ["no number"], "p4": ["5", "5", "5"]})
    kept = select_pairs(rows, 3, "last_integer", DistillConfig(filter="majority"))
    assert [(r["id"], r["completion"]) for r in kept] == [("p1", "x 7"), ("p1", "7"), ("p4", "5"), ("p4", "5"),
                                                          ("p4", "5")]


def test_agreement_threshold_counts_every_sample():
    rows = _rows({"p1": ["7", "7", "8"], "p2": ["5", "5", "5"]})
    kept = select_pairs(rows, 3, "last_integer", DistillConfig(filter="majority", min_agreement=0.9))
    assert {r["id"] for r in kept} == {"p2"}
    # p2 had 4 samples, one unfinished (not in rows): 3/4 agree
    kept = select_pairs(_rows({"p2": ["5", "5", "5"]}), 4, "last_integer",
                        DistillConfig(filter="majority", min_agreement=0.8))
    assert kept == []


def test_none_filter_keeps_everything_and_canonical_targets_rewrite():
    rows = _rows({"p1": ["The sum is 7.", "so \\boxed{8}"], "p2": ["no answer"]})
    assert len(select_pairs([dict(r) for r in rows], 2, "last_integer", DistillConfig())) == 3
    kept = select_pairs([dict(r) for r in rows], 2, "boxed_integer", DistillConfig(target="canonical"))
    assert [r["completion"] for r in kept] == ["\\boxed{7}", "\\boxed{8}"]  # p2 has no answer to rewrite
    kept = select_pairs(_rows({"q": ["**Yes**, it does."]}), 1, "yes_no_maybe", DistillConfig(target="canonical"))
    assert kept[0]["completion"] == "yes"


# -- property tests: arbitrary text, unbalanced and nested tags, unicode, huge inputs ----------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_pieces = st.lists(st.one_of(st.text(max_size=30), st.sampled_from(["<think>", "</think>", "<think", "</", "\n"])),
                   max_size=30).map("".join)


@given(_pieces)
@settings(max_examples=300, deadline=None)
def test_strip_never_raises_and_never_leaves_a_tag(text):
    result = strip_trace(text)
    assert isinstance(result.status, Status) and (result.answer is not None) == (result.status == Status.ok)
    if result.answer is not None:
        assert "<think>" not in result.answer and "</think>" not in result.answer and result.answer.strip()


@given(_pieces, _pieces, st.text(min_size=1, max_size=40).filter(lambda a: "<think>" not in a and "</think>" not in a
                                                                   and a.strip()))
@settings(max_examples=200, deadline=None)
def test_the_answer_does_not_depend_on_the_trace(trace_a, trace_b, answer):
    a = strip_trace(f"{trace_a}</think>{answer}")
    b = strip_trace(f"{trace_b}</think>{answer}")
    assert a == b and a.answer == answer.strip()


def test_huge_generation_is_stripped_quickly():
    text = "1+1=2," * 200_000 + "</think>\n\n42"
    assert strip_trace(text).answer == "42"
