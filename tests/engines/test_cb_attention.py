"""`cb` runs the attention it loaded and planned for (issue 26, finding 6): transformers' continuous batching switches
a half-precision model to a flash kernel where one is available (`auto_switch_to_flash`, from the hub through
`kernels` where it can reach it); the engine turns that off, so a run with hub access uses the engine
`make gpu-check` measured offline (its `cb_cache` row records the attention on the card)."""

import dataclasses

import torch

from tests.support.shared import compose
from thinkswitch.engines.base import Generator
from thinkswitch.engines.paged_cache import ATTENTION


def test_cb_keeps_sdpa_where_transformers_would_switch_to_a_flash_kernel(testbed_pair, monkeypatch):
    from transformers.generation.continuous_batching import continuous_api

    monkeypatch.setattr(continuous_api, "is_flash_attn_3_available", lambda **kwargs: True)  # as with hub access
    cfg = compose(["generation.backend=cb", "model.dtype=bfloat16"])
    sampling = dataclasses.replace(cfg.model.sampling.instruct, max_new_tokens=4, do_sample=False, temperature=None,
                                   top_p=None, top_k=None)
    with Generator(model=cfg.model, generation=cfg.generation, device=torch.device("cpu")).open(
            testbed_pair.instruct) as engine:
        model = engine.model
        assert model.dtype == torch.bfloat16 and model._supports_flash_attn  # transformers' condition to switch holds
        assert len(engine.generate(["a b", "c d e"], sampling, seed=0)) == 2
        assert model.config._attn_implementation == ATTENTION == "sdpa"
