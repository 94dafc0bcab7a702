"""evaluate() with a scripted backend: per-question rows and the metrics of label graders (PubMedQA)."""

from contextlib import contextmanager

import pytest

from thinkswitch.analysis.stats import macro_f1
from thinkswitch.config import SamplingConfig
from thinkswitch.stages.evaluate import EvaluateInputs, evaluate
from thinkswitch.stages.inputs import Artifact, Engine, Numerics
from thinkswitch.store.io import read_jsonl


class ScriptedBackend:
    """Answers each prompt with the text scripted for it (by sample, in order)."""

    class tokenizer:  # noqa: N801 - stands in for a tokenizer object
        @staticmethod
        def apply_chat_template(messages, add_generation_prompt, tokenize):
            return messages[-1]["content"]

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = {k: list(v) for k, v in answers.items()}

    def generate(self, prompts, sampling, *, seed, n=1, desc="", on_batch=None, done=None):
        done = done or {}
        results = [done.get(i) or {"output": self.answers[p].pop(0), "tokens": 3}
                   for i, p in enumerate(q for q in prompts for _ in range(n))]
        if on_batch is not None:
            on_batch({i: r for i, r in enumerate(results) if i not in done})
        return results

    @contextmanager
    def open(self, checkpoint):  # the Generator interface: this object is its own backend
        yield self


ENGINE = Engine(numerics=Numerics(device_type="cpu", dtype="float32"), backend="scripted", batch_size=1)


def inputs(examples, role, grader, out, samples=1) -> EvaluateInputs:
    return EvaluateInputs(checkpoint=Artifact("unused", "unused"), role=role, examples=tuple(examples),
                          grader=grader, sampling=SamplingConfig(), samples=samples, system_prompt=None, seed=0,
                          engine=ENGINE, out=out)


def run_evaluate(answers, role, out, samples=1):
    return evaluate(inputs(EXAMPLES, role, "yes_no_maybe", out, samples), generator=ScriptedBackend(answers))


EXAMPLES = [{"id": f"q{i}", "prompt": f"p{i}", "answer": gold}
            for i, gold in enumerate(["yes", "yes", "yes", "no", "maybe"])]


def test_yes_no_maybe_reports_macro_f1_and_the_label_mix(tmp_path):
    answers = {"p0": ["Yes."], "p1": ["yes"], "p2": ["No."], "p3": ["no"], "p4": ["I cannot tell"]}
    m = run_evaluate(answers, "instruct", tmp_path / "eval_instruct.jsonl")
    assert m["instruct/accuracy"] == pytest.approx(3 / 5)
    # yes: tp 2, fn 1 -> 0.8; no: tp 1, fp 1 -> 2/3; maybe: tp 0 -> 0
    assert m["instruct/macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    assert (m["eval/label_share/yes"], m["eval/label_share/no"], m["eval/label_share/maybe"]) == (0.6, 0.2, 0.2)
    assert m["eval/majority_baseline"] == 0.6
    rows = read_jsonl(tmp_path / "eval_instruct.jsonl")
    assert [r["pred"] for r in rows] == ["yes", "yes", "no", "no", None]


def test_macro_f1_over_samples_and_only_for_label_graders(tmp_path):
    answers = {f"p{i}": [ex["answer"], "no"] for i, ex in enumerate(EXAMPLES)}
    answers = {k: [f"<think>hm</think>{a}" for a in v] for k, v in answers.items()}  # thinking: after the trace
    m = run_evaluate(answers, "thinking", tmp_path / "e.jsonl", samples=2)
    golds = [ex["answer"] for ex in EXAMPLES for _ in range(2)]
    preds = [p for ex in EXAMPLES for p in (ex["answer"], "no")]
    assert m["thinking/macro_f1"] == pytest.approx(macro_f1(golds, preds))
    numeric = [{"id": "a", "prompt": "x", "answer": "7"}]
    m = evaluate(inputs(numeric, "instruct", "last_integer", tmp_path / "n.jsonl"),
                 generator=ScriptedBackend({"x": ["7"]}))
    assert m["instruct/accuracy"] == 1.0 and not any("macro_f1" in k or k.startswith("eval/") for k in m)
