"""Trace stripping: literal cases, malformed ones included."""

import pytest

from thinkswitch.strip import EMPTY, OK, REOPENED, UNFINISHED, strip_generations, strip_trace
from thinkswitch.io import read_jsonl, write_jsonl


@pytest.mark.parametrize(
    "text, answer, status",
    [
        # Qwen3-2507 thinking: `<think>` is in the prompt, the output holds only `</think>`
        ("6+0=6,+4=10\n</think>\n\n10", "10", OK),
        # older Qwen3 style: both tags in the output
        ("<think>\nlet me add\n</think>\n\nThe answer is 12.", "The answer is 12.", OK),
        # several closings: split on the last one
        ("a</think>b</think>  final ", "final", OK),
        # a trace mentioning the tag literally, then the real close
        ("I should write </think> at the end.\n</think>\n42", "42", OK),
        ("</think>42", "42", OK),
        ("\n</think>\n\n\\boxed{7}\n", "\\boxed{7}", OK),
        ("résumé </think> ✓ 答案 5", "✓ 答案 5", OK),
        # cut off by max_new_tokens: never closed
        ("6+0=6,+4=10,+1=", None, UNFINISHED),
        ("<think>\nstill thinking", None, UNFINISHED),
        ("", None, UNFINISHED),
        ("42", None, UNFINISHED),
        ("<think></think", None, UNFINISHED),
        # closed, then reopened without closing
        ("x</think>42<think>more", None, REOPENED),
        ("</think><think>", None, REOPENED),
        # closed but nothing after it
        ("trace</think>", None, EMPTY),
        ("trace</think>\n\n  \n", None, EMPTY),
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
    metrics = strip_generations(gens, tmp_path / "pairs.jsonl")
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert pairs == [{"id": "a", "sample": 0, "prompt": "p1", "completion": "1"}]
    assert metrics["strip/generations"] == 4
    assert metrics["strip/pairs"] == 1
    assert metrics["strip/dropped"] == 3
    assert (metrics["strip/unfinished"], metrics["strip/empty"], metrics["strip/reopened"]) == (1, 1, 1)
