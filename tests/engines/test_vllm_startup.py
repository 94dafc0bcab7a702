"""vLLM's start-up checked before a worker starts (issue 26, finding 4): its free-memory rule (vLLM 0.32,
`v1/worker/utils.request_memory`: free >= ceil(total x gpu_memory_utilization)) with the numbers and the setting that
would start, and `max_model_len` set to the longest prompt + its budget where unset (not the model's 262,144)."""

from __future__ import annotations

import math

from tests.support.shared import compose
from thinkswitch.engines.vllm_options import context_for, startup_memory_error

GiB = 2**30


def test_free_memory_below_the_utilization_share_is_refused_with_what_would_start():
    total = int(79.2 * GiB)
    assert startup_memory_error(free=int(75 * GiB), total=total, utilization=0.9) == ""
    # iteration 1 on the H100: this process keeps the allocator's cache after QLoRA unless it is emptied
    error = startup_memory_error(free=int(70 * GiB), total=total, utilization=0.9, held=int(7.6 * GiB))
    assert error.startswith("generation.vllm.gpu_memory_utilization=0.9: vLLM needs 71.3 GiB free")
    assert "70.0 GiB is free, 7.6 GiB of it held by this process" in error
    fits = float(error.rsplit("gpu_memory_utilization<=", 1)[1].split()[0])
    assert math.ceil(total * fits) <= int(70 * GiB) and fits > 0.85
    assert startup_memory_error(free=int(70 * GiB), total=total, utilization=fits) == ""


def test_max_model_len_is_the_longest_prompt_and_its_budget_where_unset():
    from thinkswitch.sizing.run_plan import with_vllm_context

    jobs = [("generate", "k", 400, 30720), ("evaluate instruct", "k", 512, 16384)]
    assert context_for(jobs) == 31120
    generation = compose(["generation.backend=vllm"]).generation
    assert generation.vllm["max_model_len"] is None
    assert with_vllm_context(generation, 31120).vllm["max_model_len"] == 31120
    assert generation.vllm["max_model_len"] is None  # the run's config (and the stage keys) unchanged
    own = compose(["generation.backend=vllm", "generation.vllm.max_model_len=40000"]).generation
    assert with_vllm_context(own, 31120).vllm["max_model_len"] == 40000
