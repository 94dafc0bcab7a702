"""Sampled continuous batching (`engines.cb_sampling`): each request draws from (seed, its index, position) alone, so
a sampled `cb` stage SIGKILLed midway and run again ends byte-identical to an uninterrupted one."""


import pytest
import torch

from tests.support.faulty_stage import PROMPTS, SAMPLES, killed_then_resumed, run_stage
from thinkswitch.engines.cb_sampling import gumbel_choice
from thinkswitch.engines.seeds import rng_scheme
from thinkswitch.store import partial

SAMPLED_CB = ("generation.backend=cb", "model.sampling.thinking.max_new_tokens=32")  # temperature 1.5 (faulty_stage)


def test_gumbel_choice_depends_on_the_row_seed_only_and_follows_the_distribution():
    scores = torch.log(torch.tensor([[0.7, 0.2, 0.1, 0.0]])).repeat(4000, 1)
    seeds = torch.arange(4000, dtype=torch.int32)
    picks = gumbel_choice(scores, seeds)
    assert picks.tolist() == gumbel_choice(scores, seeds).tolist(), "same seeds, same tokens"
    assert gumbel_choice(scores[:7], seeds[3:10]).tolist() == picks[3:10].tolist(), "whatever runs beside a row"
    freq = torch.bincount(picks, minlength=4).double() / 4000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1, 0.0], dtype=torch.float64), atol=0.03), freq
    assert rng_scheme("cb") not in (rng_scheme("hf"), rng_scheme("vllm")), "cb results of older schemes not reused"


@pytest.mark.slow
def test_a_sampled_continuous_batching_stage_killed_midway_resumes_byte_identical(tmp_path, monkeypatch, capfd):
    generated: list[int] = []
    monkeypatch.setattr(partial, "AFTER_BATCH", [lambda path, results: generated.extend(results)])
    total = PROMPTS["generate"] * SAMPLES["generate"]
    reference = tmp_path / "reference" / "generations.jsonl"
    capfd.readouterr()
    run_stage("generate", reference, SAMPLED_CB)
    assert "ContinuousBatchingLogger - INFO" not in capfd.readouterr().err, "transformers' INFO lines are quiet"
    assert len({line for line in reference.read_text().splitlines()}) == total, "sampled hot: outputs vary"

    out, kill_after = tmp_path / "run" / "generations.jsonl", 11
    metrics = killed_then_resumed(out, kill_after, SAMPLED_CB, generated)
    assert len(generated) == total - kill_after and metrics["generate/resumed_outputs"] == kill_after
    assert out.read_bytes() == reference.read_bytes(), "sampled: the resumed stage equals an uninterrupted one"
