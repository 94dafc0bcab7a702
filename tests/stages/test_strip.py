"""Trace stripping: literal cases, malformed ones included."""

import pytest

from thinkswitch.config import DistillConfig
from thinkswitch.errors import StageError
from thinkswitch.stages import strip
from thinkswitch.stages.inputs import Artifact
from thinkswitch.stages.strip import (
    EMPTY,
    OK,
    REOPENED,
    TRUNCATED,
    UNFINISHED,
    Status,
    select_pairs,
    strip_generations,
    strip_output,
    strip_trace,
)
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


@pytest.mark.parametrize(
    "text, stopped, answer, status",
    [
        ("t</think>\n42", True, "42", OK),
        # cut by max_new_tokens after the trace: the answer may be incomplete ("4" of "42"), never a label
        ("t</think>\n4", False, None, TRUNCATED),
        ("t</think>\n\\boxed{4", False, None, TRUNCATED),
        ("t</think>The answer is 42 because", False, None, TRUNCATED),
        # cut inside the trace: unfinished, whether or not it stopped
        ("6+0=6,+4=", False, None, UNFINISHED),
        ("6+0=6,+4=", True, None, UNFINISHED),
        # the other reasons stand whether or not the generation stopped
        ("x</think>42<think>more", False, None, REOPENED),
        ("trace</think>  ", False, None, EMPTY),
        ("trace</think>", True, None, EMPTY),
    ],
)
def test_strip_output_drops_answers_cut_by_the_budget(text, stopped, answer, status):
    assert strip_output(text, stopped) == strip.Stripped(answer, status)


def _generations(path, outputs):
    """generations.jsonl of (id, output, stopped), one sample each."""
    write_jsonl(path, [{"id": i, "sample": 0, "prompt": f"prompt {i}", "output": out, "tokens": 9, "stopped": stopped}
                       for i, out, stopped in outputs])
    return Artifact.at(path)


def test_strip_generations_counts_and_drops(tmp_path):
    gens = _generations(tmp_path / "generations.jsonl", [
        ("a", "t</think>\n1", True),
        ("b", "cut off", False),
        ("c", "t</think>", True),
        ("d", "t</think>2<think>x", True),
        ("e", "t</think>\n12", False),  # truncated: maybe "123"
        ("f", "t</think>\nI am not sure.", True),  # no number: unparsable, dropped by the default filter
    ])
    metrics = strip_generations(strip.StripInputs(generations=gens, grader="last_integer", cfg=DistillConfig(),
                                                  pairs=tmp_path / "pairs.jsonl"))
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert pairs == [{"id": "a", "sample": 0, "prompt": "prompt a", "completion": "1", "pred": "1"}]
    assert metrics["strip/generations"] == 6 and metrics["strip/finished"] == 2
    assert metrics["strip/pairs"] == 1 and metrics["strip/dropped"] == 5 and metrics["strip/filtered"] == 1
    assert (metrics["strip/unfinished"], metrics["strip/empty"], metrics["strip/reopened"],
            metrics["strip/truncated"]) == (1, 1, 1, 1)
    metrics = strip_generations(strip.StripInputs(generations=gens, grader="last_integer",
                                                  cfg=DistillConfig(filter="none"), pairs=tmp_path / "all.jsonl"))
    assert [p["id"] for p in read_jsonl(tmp_path / "all.jsonl")] == ["a", "f"] and metrics["strip/filtered"] == 0


def test_every_answer_cut_off_says_to_raise_the_budget(tmp_path):
    gens = _generations(tmp_path / "g.jsonl", [("a", "t</think>\n12", False), ("b", "t</think>3", False)])
    with pytest.raises(StageError, match=r"all 2 generations were dropped \(truncated: 2\).*"
                                         r"model\.sampling\.thinking\.max_new_tokens"):
        strip_generations(strip.StripInputs(generations=gens, grader="last_integer", cfg=DistillConfig(),
                                            pairs=tmp_path / "pairs.jsonl"))


def test_a_filter_that_drops_every_answer_says_so(tmp_path):
    gens = _generations(tmp_path / "g.jsonl", [("a", "t</think>no idea", True), ("b", "t</think>none", True)])
    with pytest.raises(StageError, match=r"filter parsable dropped all 2 answers of the 2 generations"):
        strip_generations(strip.StripInputs(generations=gens, grader="last_integer", cfg=DistillConfig(),
                                            pairs=tmp_path / "pairs.jsonl"))


@pytest.mark.parametrize(
    "grader, answer, parsable",
    [
        ("last_integer", "The sum is 42.", True),
        ("last_integer", "-7", True),
        ("last_integer", "no number here", False),
        ("last_integer", "3.5", False),  # a decimal is no integer
        ("last_integer", "", False),
        ("boxed_integer", "so \\boxed{33}", True),
        ("boxed_integer", "the answer is 33", True),  # the last integer, when there is no box
        ("boxed_integer", "\\boxed{x+1}", False),
        ("boxed_integer", "\\boxed{", False),
        ("boxed_integer", "I give up", False),
        ("yes_no_maybe", "Yes, it does.", True),
        ("yes_no_maybe", "**Final answer: maybe**", True),
        ("yes_no_maybe", "The evidence is unclear", False),
        ("yes_no_maybe", "yesterday", False),
    ],
)
def test_parsable_filter_keeps_answers_the_grader_reads(grader, answer, parsable):
    rows = _rows({"p": [answer]})
    assert len(select_pairs(rows, 1, grader, DistillConfig())) == int(parsable)
    assert len(select_pairs(_rows({"p": [answer]}), 1, grader, DistillConfig(filter="none"))) == 1


def test_gold_oracle_keeps_the_thinking_models_correct_answers_in_their_own_format(tmp_path):
    gens = _generations(tmp_path / "g.jsonl", [
        ("a", "t</think>\nThe sum is 12.", True),  # correct: kept as written
        ("b", "t</think>\nThe sum is 13.", True),  # wrong
        ("c", "t</think>\n14", False),  # correct so far, but cut off
        ("d", "t</think>\nno idea", True),
    ])
    examples = ({"id": "a", "prompt": "p", "answer": "12"}, {"id": "b", "prompt": "p", "answer": "12"},
                {"id": "c", "prompt": "p", "answer": "14"}, {"id": "d", "prompt": "p", "answer": "1"})
    metrics = strip.gold_pairs(strip.GoldInputs(generations=gens, examples=examples, grader="last_integer",
                                                cfg=DistillConfig(), pairs=tmp_path / "pairs.jsonl"))
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert [(p["id"], p["completion"]) for p in pairs] == [("a", "The sum is 12.")]
    assert metrics["strip/pairs"] == 1 and metrics["strip/truncated"] == 1 and metrics["strip/filtered"] == 2
    with pytest.raises(StageError, match=r"gold answer dropped all 1 answers"):
        strip.gold_pairs(strip.GoldInputs(generations=_generations(tmp_path / "w.jsonl", [("b", "t</think>13", True)]),
                                          examples=examples, grader="last_integer", cfg=DistillConfig(),
                                          pairs=tmp_path / "none.jsonl"))
    with pytest.raises(StageError, match=r"method=gold_oracle needs answers .* id a has none"):
        strip.gold_pairs(strip.GoldInputs(generations=gens, examples=({"id": "a", "prompt": "p", "answer": None},),
                                          grader="last_integer", cfg=DistillConfig(), pairs=tmp_path / "x.jsonl"))


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
    assert len(select_pairs([dict(r) for r in rows], 2, "last_integer", DistillConfig(filter="none"))) == 3
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
