"""evaluate() with a scripted backend: per-question rows, what `finished` means (literal outputs, cut or not), the
unfinished share, intervals over several samples, and the metrics of label graders (PubMedQA)."""

from contextlib import contextmanager

import pytest

from thinkswitch.analysis.stats import bootstrap_interval, macro_f1, wilson_interval
from thinkswitch.config import SamplingConfig
from thinkswitch.data.grading import get_grader
from thinkswitch.stages.evaluate import EvaluateInputs, evaluate, grade_output
from thinkswitch.stages.inputs import Artifact, Engine, Numerics
from thinkswitch.store.io import read_jsonl


class ScriptedBackend:
    """Answers each prompt with the text scripted for it (by sample, in order): a string (a generation that stopped
    by itself) or (text, stopped)."""

    class tokenizer:  # noqa: N801 - stands in for a tokenizer object
        @staticmethod
        def apply_chat_template(messages, add_generation_prompt, tokenize):
            return messages[-1]["content"]

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = {k: list(v) for k, v in answers.items()}

    def generate(self, prompts, sampling, *, seed, n=1, desc="", on_batch=None, done=None):
        done = done or {}
        results = [done.get(i) or self.output(self.answers[p].pop(0))
                   for i, p in enumerate(q for q in prompts for _ in range(n))]
        if on_batch is not None:
            on_batch({i: r for i, r in enumerate(results) if i not in done})
        return results

    @staticmethod
    def output(scripted) -> dict:
        text, stopped = scripted if isinstance(scripted, tuple) else (scripted, True)
        return {"output": text, "tokens": 3, "stopped": stopped}

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


# -- finished: the generation stopped by itself, and left an answer ---------------------------------------------

@pytest.mark.parametrize(
    "output, stopped, role, grader, gold, pred, correct, finished",
    [
        ("42", True, "instruct", "last_integer", "42", "42", True, True),
        ("4", False, "instruct", "last_integer", "42", None, False, False),  # cut by max_new_tokens
        ("42", False, "instruct", "last_integer", "42", None, False, False),  # right so far, still cut
        ("", True, "instruct", "last_integer", "42", None, False, False),  # stopped with nothing written
        ("  \n", True, "instruct", "last_integer", "42", None, False, False),
        ("The sum is 41.", True, "instruct", "last_integer", "42", "41", False, True),  # finished, wrong
        ("t</think>\n42", True, "thinking", "last_integer", "42", "42", True, True),
        ("t</think>\n42", False, "thinking", "last_integer", "42", None, False, False),
        # a derivation cut inside its trace whose last integer is the gold: never read by the fallback
        ("6+0=6,+4=10, so 42", False, "thinking", "last_integer", "42", None, False, False),
        ("6+0=6,+4=10, so 42", True, "thinking", "last_integer", "42", None, False, False),  # never closed
        ("t</think>", True, "thinking", "last_integer", "42", None, False, False),
        ("so far x = 33, then", False, "instruct", "boxed_integer", "33", None, False, False),
        ("x = 33, so \\boxed{33}", True, "instruct", "boxed_integer", "33", "33", True, True),
        ("x = 33, so the answer is 33", True, "instruct", "boxed_integer", "33", "33", True, True),  # fallback
        ("Yes", False, "instruct", "yes_no_maybe", "yes", None, False, False),
        ("Yes.", True, "instruct", "yes_no_maybe", "yes", "yes", True, True),
        ("t</think>Maybe.", True, "thinking", "yes_no_maybe", "maybe", "maybe", True, True),
    ],
)
def test_grade_output(output, stopped, role, grader, gold, pred, correct, finished):
    graded = grade_output(output, stopped, role, get_grader(grader), gold)
    assert (graded["pred"], graded["correct"], graded["finished"]) == (pred, correct, finished)


def test_unfinished_outputs_are_wrong_reported_and_cast_no_vote(tmp_path):
    numeric = [{"id": "a", "prompt": "x", "answer": "7"}, {"id": "b", "prompt": "y", "answer": "5"}]
    # a: 7 cut (would be right) + 8 + 7 cut: no vote of the cut ones counts, the majority is 8
    answers = {"x": [("7", False), "8", ("7", False)], "y": ["5", "5", ("5", False)]}
    m = evaluate(inputs(numeric, "instruct", "last_integer", tmp_path / "e.jsonl", samples=3),
                 generator=ScriptedBackend(answers))
    rows = read_jsonl(tmp_path / "e.jsonl")
    assert [r["finished"] for r in rows] == [False, True, False, True, True, False]
    assert [r["correct"] for r in rows] == [False, False, False, True, True, False]
    assert m["instruct/unfinished"] == pytest.approx(3 / 6)
    assert m["instruct/accuracy"] == pytest.approx(2 / 6) and m["instruct/maj_accuracy"] == 0.5  # b's 5, not a's 7


def test_interval_over_several_samples_is_a_bootstrap_over_questions(tmp_path):
    """Each question always right or always wrong: 4 samples add nothing, so the interval must not narrow as if
    the 5 x 4 answers were 20 independent trials."""
    numeric = [{"id": f"q{i}", "prompt": f"x{i}", "answer": "1"} for i in range(5)]
    answers = {f"x{i}": ["1" if i < 3 else "0"] * 4 for i in range(5)}
    m = evaluate(inputs(numeric, "instruct", "last_integer", tmp_path / "e.jsonl", samples=4),
                 generator=ScriptedBackend(answers))
    low, high = m["instruct/accuracy_ci_low"], m["instruct/accuracy_ci_high"]
    assert (low, high) == bootstrap_interval([1, 1, 1, 0, 0], seed=0)
    wilson_low, wilson_high = wilson_interval(12, 20)
    assert high - low > wilson_high - wilson_low
    one = evaluate(inputs(numeric, "instruct", "last_integer", tmp_path / "one.jsonl"),
                   generator=ScriptedBackend({k: v[:1] for k, v in answers.items()}))
    assert (one["instruct/accuracy_ci_low"], one["instruct/accuracy_ci_high"]) == wilson_interval(3, 5)
