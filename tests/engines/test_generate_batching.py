"""Token-budget batching in `generate_texts`, and splitting a batch that runs out of CUDA memory.

The one boundary faked here is CUDA running out of memory: a wrapper around the real
`model.generate` raises `torch.OutOfMemoryError` for batches above a size; everything else is the
real testbed model.
"""

import dataclasses
from typing import Optional

import pytest
import torch

from tests.support.shared import compose
from thinkswitch.config import SamplingConfig
from thinkswitch.engines import decoding
from thinkswitch.engines.base import prompt_token_counts, sampling_kwargs
from thinkswitch.engines.chat import chat_prompt
from thinkswitch.engines.hf import generate_texts, next_batch
from thinkswitch.engines.seeds import batch_seed


def test_next_batch_respects_rows_and_the_token_budget():
    lengths = [10, 30, 20, 50, 5]
    order = [4, 0, 2, 1, 3]
    assert next_batch(order, 0, 3) == [4, 0, 2]  # no budget: rows only
    assert next_batch(order, 3, 3) == [1, 3]
    # rows x (longest + 100) <= budget: [4, 0] -> 2 x 110 = 220; adding 2 -> 3 x 120 = 360
    assert next_batch(order, 0, 8, lengths, 100, 359) == [4, 0]
    assert next_batch(order, 0, 8, lengths, 100, 360) == [4, 0, 2]
    assert next_batch(order, 0, 2, lengths, 100, 10**9) == [4, 0]  # rows still bound it
    assert next_batch(order, 4, 8, lengths, 100, 10) == [3]  # over the budget alone: runs alone
    assert next_batch(order, 5, 8, lengths, 100, 10**9) == []


@pytest.fixture(scope="module")
def thinking(testbed_pair):
    from thinkswitch.engines.models import load_model, load_tokenizer

    cfg = compose()
    model = load_model(testbed_pair.thinking, cfg.model, torch.device("cpu"))
    tok = load_tokenizer(testbed_pair.thinking, cfg.model)
    sampling = dataclasses.replace(cfg.model.sampling.thinking, max_new_tokens=64)
    return model, tok, sampling  # 64 new tokens: room for the testbed's ~50-token traces, and quicker


def _prompts(tok, n: int, seed: int = 5) -> list[str]:
    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples

    return [chat_prompt(tok, ex["prompt"]) for ex in task_examples(n, seed, "train", TestbedSpec())]


def reference_generate_texts(model, tokenizer, prompts, sampling, batch_size, seed):
    """`generate_texts` as it was before token budgets (commit 69fdcfd), verbatim but for the progress bar and
    the seeding: each batch seeds torch from (seed, its first position), so that a resumed run draws the same."""
    eos_ids = decoding.eos_ids(model.generation_config, tokenizer)
    drop = {t for t in tokenizer.all_special_tokens if t not in ("<think>", "</think>")}
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Optional[dict]] = [None] * len(prompts)
    kwargs = sampling_kwargs(sampling)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            torch.manual_seed(batch_seed(seed, start))
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            out = model.generate(**enc, **kwargs, pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:].tolist()
            for i, ids in zip(idx, new):
                stop = next((j for j, t in enumerate(ids) if t in eos_ids), None)
                kept = ids if stop is None else ids[: stop + 1]
                text = tokenizer.decode(kept[:-1] if stop is not None else kept, skip_special_tokens=False)
                for tok in drop:
                    text = text.replace(tok, "")
                results[i] = {"output": text, "tokens": len(kept), "stopped": stop is not None}
    return results


class Spy:
    """Wraps the real `model.generate`: records each call's rows; with `oom_above`, raises CUDA's out-of-memory
    error for batches of more rows (only on the calls listed in `oom_on_calls`, when given)."""

    def __init__(self, model, monkeypatch, oom_above: Optional[int] = None, oom_on_calls: Optional[set] = None):
        self.real, self.oom_above, self.oom_on_calls = model.generate, oom_above, oom_on_calls
        self.calls, self.widths = [], []  # rows, and the padded prompt width, of each call
        monkeypatch.setattr(model, "generate", self)

    def __call__(self, input_ids, **kwargs):
        rows = input_ids.shape[0]
        self.calls.append(rows)
        self.widths.append(input_ids.shape[1])
        n = len(self.calls)
        calls = self.oom_on_calls
        if self.oom_above is not None and rows > self.oom_above and (calls is None or n in calls):
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows} GiB (test double)")
        return self.real(input_ids=input_ids, **kwargs)


@pytest.mark.slow
def test_outputs_equal_todays_when_the_budget_does_not_bind(thinking, monkeypatch):
    model, tok, sampling = thinking  # sampled: the same batches and RNG stream give the same outputs
    prompts = _prompts(tok, 8)
    expected = reference_generate_texts(model, tok, prompts, sampling, 4, seed=3)
    assert generate_texts(model, tok, prompts, sampling, 4, seed=3) == expected
    longest = max(prompt_token_counts(tok, prompts))
    loose = 4 * (longest + sampling.max_new_tokens)  # exactly enough for every batch of 4
    spy = Spy(model, monkeypatch)
    assert generate_texts(model, tok, prompts, sampling, 4, seed=3, token_budget=loose) == expected
    assert spy.calls == [4, 4]
    assert len({r["output"] for r in expected}) > 1 and sum(r["stopped"] for r in expected) >= 6


@pytest.mark.slow
def test_a_binding_budget_bounds_every_batch_and_keeps_input_order(thinking, monkeypatch):
    model, tok, sampling = thinking
    greedy = SamplingConfig(do_sample=False, max_new_tokens=sampling.max_new_tokens)
    prompts = _prompts(tok, 7)
    lengths = prompt_token_counts(tok, prompts)
    one_by_one = [generate_texts(model, tok, [p], greedy, 1, seed=0)[0] for p in prompts]
    budget = 3 * (max(lengths) + greedy.max_new_tokens)  # 3 rows of the longest prompt
    spy = Spy(model, monkeypatch)
    got = generate_texts(model, tok, prompts, greedy, 8, seed=0, token_budget=budget)
    assert sum(spy.calls) == 7 and max(spy.calls) < 8  # the budget binds below generation.batch_size
    assert all(rows * (width + greedy.max_new_tokens) <= budget for rows, width in zip(spy.calls, spy.widths))
    assert [r["output"] for r in got] == [r["output"] for r in one_by_one]  # input order (greedy: same answers)


@pytest.mark.slow
def test_out_of_memory_splits_the_batch_and_caps_later_ones(thinking, monkeypatch):
    model, tok, sampling = thinking
    prompts = _prompts(tok, 16)
    expected = generate_texts(model, tok, prompts, sampling, 4, seed=7)  # what batches of 4 give
    spy = Spy(model, monkeypatch, oom_above=4)
    got = generate_texts(model, tok, prompts, sampling, 8, seed=7)
    assert spy.calls == [8, 4, 4, 4, 4]  # 8 failed, its halves ran, later batches were capped at 4
    assert got == expected


@pytest.mark.slow
def test_out_of_memory_mid_run_keeps_finished_batches(thinking, monkeypatch):
    model, tok, sampling = thinking
    prompts = _prompts(tok, 16)
    uninterrupted = generate_texts(model, tok, prompts, sampling, 8, seed=11)
    spy = Spy(model, monkeypatch, oom_above=4, oom_on_calls={2})  # the second batch runs out of memory
    got = generate_texts(model, tok, prompts, sampling, 8, seed=11)
    assert spy.calls == [8, 8, 4, 4]  # the first batch is never redone
    order = sorted(range(16), key=lambda i: len(prompts[i]))
    first = order[:8]
    assert [got[i] for i in first] == [uninterrupted[i] for i in first]  # kept as generated
    assert all(r is not None and "output" in r for r in got)


@pytest.mark.slow
def test_out_of_memory_on_one_prompt_raises(thinking, monkeypatch):
    model, tok, sampling = thinking
    Spy(model, monkeypatch, oom_above=0)
    with pytest.raises(torch.OutOfMemoryError):
        generate_texts(model, tok, _prompts(tok, 3), sampling, 4, seed=0)
