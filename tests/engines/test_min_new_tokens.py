"""The checkpoint's `min_new_tokens` holds EOS off in every engine, as `generate` honours it (issue 26, finding 8:
`make gpu-check` asks its random pair for full-length outputs that way): continuous batching replaces the processor
transformers drops (`cb_sampling.HoldEOS`), vLLM gets it as `min_tokens`."""

import dataclasses
import shutil

import pytest
import torch
from transformers import GenerationConfig

from tests.support.shared import compose
from thinkswitch.config import SamplingConfig, TestbedSpec
from thinkswitch.data.testbed_task import task_examples
from thinkswitch.engines.base import Generator
from thinkswitch.engines.chat import chat_prompt


def _cb_tokens(checkpoint, max_new: int, do_sample: bool) -> list[int]:
    cfg = compose(["generation.backend=cb"])
    sampling = dataclasses.replace(cfg.model.sampling.instruct, max_new_tokens=max_new, do_sample=do_sample,
                                   **({} if do_sample else dict(temperature=None, top_p=None, top_k=None)))
    examples = task_examples(6, 9, "eval", TestbedSpec())
    with Generator(model=cfg.model, generation=cfg.generation, device=torch.device("cpu")).open(str(checkpoint)) as e:
        prompts = [chat_prompt(e.tokenizer, ex["prompt"]) for ex in examples]
        return [r["tokens"] for r in e.generate(prompts, sampling, seed=1)]


@pytest.mark.parametrize("do_sample", [False, True])
def test_continuous_batching_honours_the_checkpoints_min_new_tokens(testbed_pair, tmp_path, do_sample):
    # the testbed's instruct answers take 3 tokens on their own (without the hold this test fails: 3 < 14)
    checkpoint = tmp_path / "instruct"
    shutil.copytree(testbed_pair.instruct, checkpoint)
    config = GenerationConfig.from_pretrained(checkpoint)
    config.min_new_tokens = 14
    config.save_pretrained(checkpoint)
    tokens = _cb_tokens(checkpoint, 20, do_sample)
    assert len(tokens) == 6 and min(tokens) >= 14, tokens


def test_vllm_sampling_params_carry_the_checkpoints_min_new_tokens_as_min_tokens():
    from thinkswitch.engines.vllm_backend import effective_sampling

    ckpt = GenerationConfig(min_new_tokens=12, temperature=0.6)
    assert effective_sampling(SamplingConfig(max_new_tokens=16), ckpt) == {
        "max_tokens": 16, "min_tokens": 12, "temperature": 0.0}
    assert effective_sampling(SamplingConfig(max_new_tokens=8, do_sample=True), ckpt)["min_tokens"] == 8  # capped
    assert "min_tokens" not in effective_sampling(SamplingConfig(max_new_tokens=8), GenerationConfig())
