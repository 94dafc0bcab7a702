"""`cb`'s paged cache sized as transformers sizes it (issue 26, finding 3; issue 28, item 6): the plan against
transformers' own `PagedAttentionCache`, built on the meta device with its memory measurement given (the seam);
the paper's 3070 setting refused with the numbers and what fits; a run refused at start."""

from __future__ import annotations

import pytest
import torch

from thinkswitch.engines.paged_cache import check_paged, hf_config, plan_paged_cache
from thinkswitch.errors import ConfigError
from thinkswitch.sizing.shapes import QWEN3_4B_2507, GiB

KEY = "model.sampling.thinking.max_new_tokens"


def transformers_cache(monkeypatch, config, free: int, dtype, **cb_kwargs):
    """transformers' own cache for `free` bytes free (its measurement given; the cache tensor on the meta device)."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching import cache as paged
    from transformers.generation.continuous_batching.distributed import DistributedHelper

    monkeypatch.setattr(paged, "get_device_and_memory_breakdown", lambda: (torch.device("meta"), free, 0, 0))
    return paged.PagedAttentionCache(hf_config(config), ContinuousBatchingConfig(**cb_kwargs), device="meta",
                                     distributed_helper=DistributedHelper(None, None), dtype=dtype,
                                     model_supports_logits_to_keep=True)


@pytest.mark.parametrize("free, weights", [(int(7.3 * GiB), int(2.6 * GiB)), (int(78.7 * GiB), int(8 * GiB))])
def test_the_plan_is_the_cache_transformers_builds(monkeypatch, free, weights):
    plan = plan_paged_cache(QWEN3_4B_2507, dtype="bfloat16", device="cuda", free_bytes=free, weight_bytes=weights,
                            prompt_tokens=[512] * 1000, max_new_tokens=8192, do_sample=True)
    assert plan.memory_share == 0.8 and plan.max_batch_tokens == 8192 and plan.attention == "sdpa"
    # left to itself (sampling: 0.8 of the free memory), transformers builds the same cache
    own = transformers_cache(monkeypatch, QWEN3_4B_2507, free - weights, torch.bfloat16, max_memory_percent=0.8,
                             max_requests_per_batch=1000, max_blocks_per_request=0, use_async_batching=False)
    assert (own.num_blocks, own.max_batch_tokens) == (plan.num_blocks, plan.max_batch_tokens)
    # asked for explicitly (as the engine asks), it fits the same memory (its footprint check passes)
    explicit = transformers_cache(monkeypatch, QWEN3_4B_2507, free - weights, torch.bfloat16, **plan.config_kwargs())
    assert explicit.num_blocks == plan.num_blocks and explicit.max_batch_tokens == plan.max_batch_tokens
    # K/V read back widened to all 32 query heads under SDPA: 72 rows of 128 per token beside the cache's 16
    assert plan.block_bytes == 36 * 8 * 128 * 2 * 2 * 256


def test_greedy_takes_0_9_and_the_cpu_0_6_as_transformers_resolves_them():
    from thinkswitch.engines.paged_cache import memory_share

    assert (memory_share("cuda", False), memory_share("cuda", True), memory_share("cpu", True)) == (0.9, 0.8, 0.6)


def test_the_readme_3070_setting_is_refused_with_the_numbers_and_what_fits():
    """The 3070 (7.8 GiB usable, 0.5 GiB of it CUDA's), NF4 weights, 30,720 new tokens: a trace of 31,232 tokens;
    transformers' sizing leaves ~16k tokens of cache."""
    plan = plan_paged_cache(QWEN3_4B_2507, dtype="bfloat16", device="cuda", free_bytes=int(7.3 * GiB),
                            weight_bytes=int(2.6 * GiB), prompt_tokens=[512] * 1000, max_new_tokens=30720)
    assert not plan.fits and 12_000 < plan.cache_tokens < 20_000
    with pytest.raises(ConfigError) as e:
        check_paged(plan, KEY, quantized=True)
    msg = str(e.value)
    assert f"{KEY}<={plan.cache_tokens - 512}" in msg and "needs 122 blocks of 256 tokens" in msg
    assert "80% of it less a batch reserve of 8,192 tokens" in msg and "nf4" not in msg
    fitted = plan_paged_cache(QWEN3_4B_2507, dtype="bfloat16", device="cuda", free_bytes=int(7.3 * GiB),
                              weight_bytes=int(2.6 * GiB), prompt_tokens=[512] * 1000,
                              max_new_tokens=plan.fitting_max_new_tokens)
    assert fitted.fits and check_paged(fitted, KEY, quantized=True) is fitted


def test_a_million_token_budget_is_refused_at_start_not_after_a_stage(testbed_pair):
    """Issue 28, item 6: `generation.backend=cb model.sampling.thinking.max_new_tokens=1000000`, planned on 4 GiB
    free (the seam: a given free memory) before any model loads."""
    from tests.support.shared import compose
    from thinkswitch.sizing.run_plan import jobs_for, plan_cb
    from thinkswitch.sizing.shapes import load_config

    cfg = compose(["generation.backend=cb", f"{KEY}=1000000"])
    pair = testbed_pair
    jobs = jobs_for(cfg, [60] * 8, [60] * 8)
    with pytest.raises(ConfigError, match=rf"max_new_tokens=1,000,000: .* on cpu: .*set {KEY}<=\d+ or use a device"):
        plan_cb(cfg, pair, load_config(testbed_pair.thinking), jobs, "float32", torch.device("cpu"), 4 * GiB)
    cfg = compose(["generation.backend=cb"])
    plan_cb(cfg, pair, load_config(testbed_pair.thinking), jobs_for(cfg, [60] * 8, [60] * 8), "float32",
            torch.device("cpu"), 4 * GiB)


def test_the_runs_memory_plan_sizes_the_shared_job_list(testbed_pair):
    """`plan_memory` plans the jobs `run_plan.jobs_for` lists (as `thinkswitch-plan` does): the HF batches, vLLM's
    context (the longest prompt + the thinking budget) and cb's cache, from the prompts' own token counts."""
    from tests.support.shared import compose
    from thinkswitch.config import Backend
    from thinkswitch.data.domains import load_domain
    from thinkswitch.sizing.run_plan import plan_memory

    cfg = compose(["domain.train_prompts=4", "domain.eval_size=3", f"{KEY}=64"])
    train, evaluation = load_domain(cfg.domain, cfg.model)
    cpu = torch.device("cpu")
    assert plan_memory(cfg, testbed_pair, train, evaluation, cpu, Backend.hf) > 64
    context = plan_memory(cfg, testbed_pair, train, evaluation, cpu, Backend.vllm)
    assert 64 < context < 64 + 200  # the longest chat-formatted prompt + 64
    assert plan_memory(cfg, testbed_pair, train, evaluation, cpu, Backend.cb) is None
