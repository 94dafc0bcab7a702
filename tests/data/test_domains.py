"""The paper's domains on real data: loaders, contamination guard, and the loop on a tiny 2507 pair."""

import json

import pytest

from tests.support import cli
from tests.support.paths import SHARED_DATA
from tests.support.shared import compose
from tests.support.tinypair import ANSWER
from thinkswitch.config import TestbedSpec
from thinkswitch.data.domains import check_disjoint, load_domain, normalise
from thinkswitch.data.sources import DataError
from thinkswitch.data.testbed_task import MAX_TASK_PROMPTS, task_capacity, task_examples
from thinkswitch.store.io import read_json, read_jsonl


def domain(name, *overrides):
    cfg = compose([f"domain={name}", f"data_dir={SHARED_DATA}", *overrides])
    return load_domain(cfg.domain, cfg.model)


def test_aime_local_reads_2026_for_eval_and_earlier_years_for_training():
    train, evaluation = domain("aime_local")
    assert len(train) == 15 and len(evaluation) == 30
    aime26 = {r["prompt"] for r in read_jsonl(SHARED_DATA / "aime" / "aime26.jsonl")}
    assert {e["prompt"] for e in evaluation} == aime26
    assert not {t["prompt"] for t in train} & aime26
    assert all(0 <= int(e["answer"]) <= 999 for e in evaluation)
    assert all("\\boxed{}" in e["prompt"] for e in evaluation)


def test_pubmedqa_local_uses_the_official_test_split_for_eval_only():
    train, evaluation = domain("pubmedqa_local", "domain.train_prompts=40")
    test_ids = set(read_json(SHARED_DATA / "pubmedqa" / "test_ground_truth.json"))
    assert len(evaluation) == 30 and {e["id"] for e in evaluation} <= test_ids
    assert len(train) == 40 and not {t["id"] for t in train} & test_ids
    assert {e["answer"] for e in evaluation} <= {"yes", "no", "maybe"}
    assert all("Question:" in e["prompt"] and "yes, no or maybe" in e["prompt"] for e in evaluation)


def test_draws_are_seeded():
    assert domain("pubmedqa_local")[1] == domain("pubmedqa_local")[1]
    assert domain("pubmedqa_local")[1] != domain("pubmedqa_local", "domain.seed=1")[1]


@pytest.mark.parametrize("override, match", [
    ("domain.train_prompts=500", r"domain\.train_prompts=500, but domain\.train holds only 60"),
    ("domain.eval_size=31", r"domain\.eval_size=31, but domain\.eval holds only 30"),
    ("domain.prompt_template='{problem}'", r"prompt_template uses \{problem\}"),
    ("domain.eval.files=[/nonexistent/x.jsonl]", r"/nonexistent/x\.jsonl: does not exist"),
])
def test_bad_domain_settings_name_the_key(override, match):
    with pytest.raises(DataError, match=match):
        domain("aime_local", override)


def test_contamination_guard():
    with pytest.raises(DataError, match=r"training prompt\(s\) also in the evaluation set"):
        domain("aime_local", f"domain.train.files=[{SHARED_DATA}/aime/aime26.jsonl]")
    check_disjoint([{"id": "a", "prompt": "x"}], [{"id": "b", "prompt": "y"}])


@pytest.mark.parametrize("train, evaluation", [
    ("Find  x\nsuch that x > 2.", "  find x such\tthat x > 2.\n"),  # whitespace and case
    ("WHAT IS 12?", "what is 12?"),
    ("what is １２?", "what is 12?"),  # full-width digits (NFKC)
    ("the ﬁrst prime", "the first prime"),  # a ligature (NFKC)
    ("straße", "STRASSE"),  # case folding, not just lower()
    ("a\u00a0b", "a b"),  # a no-break space
    ("e\u0301", "\u00e9"),  # decomposed vs composed accent
])
def test_contamination_guard_compares_normalised_text(train, evaluation):
    assert normalise(train) == normalise(evaluation)
    with pytest.raises(DataError, match=r"domain d: 1 training prompt\(s\) also in the evaluation set, e\.g\. ids "
                                        r"\['t'\]"):
        check_disjoint([{"id": "t", "prompt": train}, {"id": "u", "prompt": "other"}],
                       [{"id": "e", "prompt": evaluation}], "d")


def test_normalised_text_still_tells_different_prompts_apart():
    check_disjoint([{"id": "t", "prompt": "what is 12?"}, {"id": "u", "prompt": "what is 1 2?"}],
                   [{"id": "e", "prompt": "what is 21?"}, {"id": "f", "prompt": "what is12?"}])
    assert normalise("what is 1 2?") != normalise("what is 12?")


# --- prompt counts beyond what the testbed task holds --------------------------------------------------------

@pytest.mark.parametrize("override, match", [
    ("domain.train_prompts=100000000",
     r"^domain\.train_prompts=100000000, but the testbed task gives at most 100000 prompts per split "
     r"\(thinkswitch\.data\.testbed_task\.MAX_TASK_PROMPTS\)$"),
    ("domain.eval_size=100001", r"^domain\.eval_size=100001, but the testbed task gives at most 100000"),
])
def test_testbed_prompt_counts_are_bounded_before_generating(override, match):
    with pytest.raises(DataError, match=match):
        domain("testbed", override)


def test_testbed_split_too_small_for_the_count():
    digits = ["model.testbed.min_digits=2", "model.testbed.max_digits=2"]
    with pytest.raises(DataError, match=r"^domain\.eval_size=10, but the testbed's eval split holds only 9 distinct "
                                        r"problems of 2-2 digits$"):
        domain("testbed", *digits, "domain.train_prompts=5", "domain.eval_size=10")
    train, evaluation = domain("testbed", *digits, "domain.train_prompts=91", "domain.eval_size=9")
    assert len({ex["prompt"] for ex in train}) == 91 and len({ex["prompt"] for ex in evaluation}) == 9


def test_a_repeated_testbed_draw_is_the_same_and_its_own_copy():
    """A multirun's jobs draw the same problems once per process; a job changing its records changes no other's."""
    spec = TestbedSpec()
    first = task_examples(50, 3, "eval", spec)
    first[0]["prompt"] = "changed"
    again = task_examples(50, 3, "eval", spec)
    assert again[0]["prompt"] != "changed" and len(again) == 50
    assert again[1:] == first[1:] and again != task_examples(50, 4, "eval", spec)


def test_prompt_token_counts_are_planned_once_per_process(testbed_pair):
    from thinkswitch.engines.models import load_tokenizer
    from thinkswitch.sizing import run_plan
    from thinkswitch.sizing.run_plan import generation_jobs

    cfg = compose(["domain.train_prompts=16", "domain.eval_size=12"])
    train, evaluation = load_domain(cfg.domain, cfg.model)
    tokenizer = load_tokenizer(testbed_pair.thinking, cfg.model)
    first = generation_jobs(cfg, tokenizer, train, evaluation)
    assert isinstance(first[0].prompt_tokens, tuple)  # nothing a caller does changes the counts kept
    calls = []
    tokenizer.__class__ = type("Counting", (tokenizer.__class__,), {
        "__call__": lambda self, *a, **k: calls.append(1) or super(type(self), self).__call__(*a, **k)})
    again = generation_jobs(cfg, tokenizer, train, evaluation)
    assert not calls and again == first and [len(j.prompt_tokens) for j in again] == [16, 12, 12]
    run_plan._COUNTED.clear()
    assert generation_jobs(cfg, tokenizer, train, evaluation) == again and calls, "counted again once forgotten"


def test_testbed_capacity_counts_each_split():
    small = TestbedSpec(min_digits=2, max_digits=3)
    assert task_capacity(small, "eval") == 9 + 137 and task_capacity(small, "train") == 91 + 863
    assert task_capacity(TestbedSpec(), "eval") == MAX_TASK_PROMPTS  # 6-10 digits: past the cap
    assert len(task_examples(146, 0, "eval", small)) == 146
    with pytest.raises(ValueError, match=r"asked for 147 eval problems; the testbed task gives at most 146"):
        task_examples(147, 0, "eval", small)


@pytest.mark.parametrize("text, match", [
    ("[1, {}]", r"^domain\.eval\.include_ids: \S+ids\.json: item 1 is an object, not an id"),
    ("7", r"^domain\.eval\.include_ids: \S+ids\.json: expected a list of ids or an object keyed by id, got a number"),
    ("[1,", r"^domain\.eval\.include_ids: \S+ids\.json:1: not valid JSON"),
])
def test_malformed_id_list_names_the_key_and_file(tmp_path, text, match):
    (tmp_path / "ids.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        domain("pubmedqa_local", f"domain.eval.include_ids={tmp_path}/ids.json")


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [
    ("aime_local", ["distill.filter=majority", "generation.samples_per_prompt=3", "distill.target=canonical",
                    "evaluate.samples=2", "cost.gpu_hour_usd=0.5"]),
])
def test_loop_runs_on_the_domain_with_a_tiny_2507_pair(tiny_2507_pair, tmp_path, name, extra):
    instruct, thinking = tiny_2507_pair
    run_dir = tmp_path / "run"
    proc = cli.thinkswitch(
        "model=local", f"model.instruct={instruct}", f"model.thinking={thinking}", f"domain={name}",
        f"data_dir={SHARED_DATA}", "domain.train_prompts=4", "domain.eval_size=5", "iterations=1",
        "model.sampling.thinking.max_new_tokens=24", "model.sampling.instruct.max_new_tokens=12",
        "tracking.mode=disabled", "trainer.sft.num_train_epochs=1", *extra, run_dir=run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = read_json(run_dir / "summary.json")
    assert summary["final"]["instruct/n"] == summary["final"]["thinking/n"] == 5
    pairs = read_jsonl(run_dir / "iter_01" / "pairs.jsonl")
    assert pairs and all("</think>" not in p["completion"] and "<think>" not in p["completion"] for p in pairs)
    evals = read_jsonl(run_dir / "iter_01" / "eval_thinking.jsonl")
    assert all(r["output"].count("</think>") <= 1 and "<think>" not in r["output"] for r in evals)
    metrics = read_json(run_dir / "iter_01" / "metrics.json")
    if "distill.target=canonical" in extra:
        assert {p["completion"] for p in pairs} == {f"\\boxed{{{ANSWER}}}"}  # canonical AIME format
        assert len(evals) == 10 and "thinking/maj_accuracy" in metrics  # 5 questions x 2 samples
        assert metrics["strip/generations"] == 12 and metrics["strip/prompts"] == 4
        assert summary["cost_usd"]["total"] > 0 and metrics["cost/distill_usd"] > 0


# --- gold answers checked at load --------------------------------------------------------------------------------

WORKED = [("Ann has 20 apples, buys 22. How many?", "Ann starts with 20.\nShe buys 22.\n20 + 22 = 42.\n#### 42"),
          ("Bo has 7 pens and loses 2. How many?", "Bo starts with 7.\nHe loses 2.\n7 - 2 = 5.\n#### 5"),
          ("Cy has 3 bags of 4 nuts. How many?", "3 bags of 4.\n3 * 4 = 12.\n#### 12")]


def worked_domain(tmp_path, rows, *overrides, grader="last_integer"):
    """A YAML-free domain composed from overrides over worked-solution JSONL files in tmp_path."""
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "Dee has 1 cat. How many?", "answer": "1"}) + "\n")
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"question": q, "solution": a}) + "\n" for q, a in rows))
    cfg = compose(["domain=aime_local", "domain.name=worked", f"domain.grader={grader}",
                   f"domain.train.files=[{tmp_path}/train.jsonl]", "domain.train.fields={prompt:question}",
                   f"domain.eval.files=[{tmp_path}/eval.jsonl]", "domain.eval.fields={prompt:question,answer:solution}",
                   "domain.train_prompts=1", f"domain.eval_size={len(rows)}", *overrides])
    return load_domain(cfg.domain, cfg.model)


def test_worked_solutions_are_refused_naming_the_line(tmp_path):
    with pytest.raises(DataError, match=r"eval\.jsonl:[123] \(id '[012]'\): gold answer 'B?.*#### [0-9]+' is not "
                                        r"readable by domain\.grader=last_integer \(expects an integer\) \(2 more of "
                                        r"the 3 questions too\); .*set domain\.eval\.gold_regex"):
        worked_domain(tmp_path, WORKED)
    rows = [(q, "42") for q, _ in WORKED[:2]] + [("Eve counts to forty-two. Result?", "forty-two")]
    with pytest.raises(DataError, match=rf"{tmp_path}/eval\.jsonl:3 \(id '2'\): gold answer 'forty-two' is not "):
        worked_domain(tmp_path, rows)
    with pytest.raises(DataError, match=r"eval\.jsonl:3 .*gold answer '1000' .*boxed_integer \(expects an integer "
                                        r"from 0 to 999\)"):
        worked_domain(tmp_path, [("a", "1"), ("b", "2"), ("c", "1000")], grader="boxed_integer")


def test_a_gold_regex_reads_worked_solutions_and_they_grade(tmp_path):
    from thinkswitch.data.grading import grade_last_integer

    _, evaluation = worked_domain(tmp_path, WORKED, r"domain.eval.gold_regex='####\s*(-?\d+)'")
    golds = {e["prompt"]: e["answer"] for e in evaluation}
    assert golds == {WORKED[0][0]: "42", WORKED[1][0]: "5", WORKED[2][0]: "12"}
    for e in evaluation:
        assert grade_last_integer(f"Counting: the answer is {e['answer']}.", e["answer"]) == (e["answer"], True)
        assert grade_last_integer("The answer is 999.", e["answer"])[1] is False
    with pytest.raises(DataError, match=r"eval\.jsonl:2 \(id '1'\): domain\.eval\.gold_regex .* does not match the "
                                        r"answer 'no marker here'"):
        worked_domain(tmp_path, [WORKED[0], ("q", "no marker here")], r"domain.eval.gold_regex='####\s*(-?\d+)'")


def test_shipped_domains_gold_answers_are_readable():
    assert len(domain("aime_local", "domain.grader=math_verify")[1]) == 30
    assert len(domain("pubmedqa_local", "domain.eval_size=500")[1]) == 500
