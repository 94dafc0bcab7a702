"""generation.backend=vllm: the vLLM worker (in .venv-vllm, `make install-vllm`) against the HF backend.

The slow tests start one engine (the testbed's thinking checkpoint) and send it every request, then
check that closing it leaves no process behind. The fast ones need no vLLM install.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import compose

from thinkswitch.config import SamplingConfig
from thinkswitch.validate import ConfigError

CPU = torch.device("cpu")


# -- fast: option checks, without vLLM -------------------------------------------------------------
@pytest.fixture
def fake_venv(tmp_path, monkeypatch):
    """A stand-in .venv-vllm: a python and the EngineArgs field list `make install-vllm` writes."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("")
    fields = {"max_model_len": ["int"], "gpu_memory_utilization": ["float"], "enforce_eager": ["bool"],
              "enable_prefix_caching": ["bool", "null"], "kv_cache_memory_bytes": ["int", "null"],
              "max_num_seqs": ["int", "null"], "dtype": ["str"], "model": ["str"], "compilation_config": ["any"]}
    (tmp_path / "engine_args.json").write_text(json.dumps({"vllm_version": "0", "fields": fields}))
    monkeypatch.setenv("THINKSWITCH_VLLM_VENV", str(tmp_path))
    return tmp_path


def test_options_are_checked_against_engine_args(fake_venv):
    from thinkswitch.engines.vllm_backend import check_vllm_options

    assert check_vllm_options({"max_model_len": 4096, "gpu_memory_utilization": 1, "enable_prefix_caching": None,
                               "kv_cache_memory_bytes": "4GB", "compilation_config": {"level": 0}}) == []
    errors = check_vllm_options({"max_num_seq": 4, "enforce_eager": "maybe", "model": "x",
                                 "kv_cache_memory_bytes": "lots"})
    assert len(errors) == 4
    assert errors[0].startswith("generation.vllm.max_num_seq: not an option") and "max_num_seqs" in errors[0]
    assert errors[1].startswith("generation.vllm.enforce_eager: expected bool")
    assert errors[2].startswith("generation.vllm.model: set by thinkswitch")
    assert errors[3].startswith("generation.vllm.kv_cache_memory_bytes")


def test_bad_engine_setting_fails_before_any_model_loads(fake_venv, monkeypatch):
    from thinkswitch.engines import vllm_backend
    from thinkswitch.validate import check_config

    cfg = compose(["generation.backend=vllm", "+generation.vllm.max_num_seq=4"])
    with pytest.raises(ConfigError, match=r"generation\.vllm\.max_num_seq: .*max_num_seqs"):
        check_config(cfg)

    def no_worker(*a, **k):
        raise AssertionError("a worker was started")

    monkeypatch.setattr(vllm_backend, "_Worker", no_worker)
    with pytest.raises(ConfigError, match=r"generation\.vllm\.max_num_seq"):
        vllm_backend.VLLMBackend.load("/nonexistent", model_cfg=cfg.model, device=CPU, gen_cfg=cfg.generation)


def test_missing_install_says_how_to_install(tmp_path, monkeypatch):
    from thinkswitch.validate import check_config

    monkeypatch.setenv("THINKSWITCH_VLLM_VENV", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="make install-vllm"):
        check_config(compose(["generation.backend=vllm"]))


def test_sampling_maps_like_hf_generate():
    from transformers import GenerationConfig

    from thinkswitch.engines.vllm_backend import effective_sampling

    ckpt = GenerationConfig(temperature=0.6, top_k=20, top_p=0.95)
    assert effective_sampling(SamplingConfig(max_new_tokens=7), ckpt) == {"max_tokens": 7, "temperature": 0.0}
    # unset fields: the checkpoint's generation_config, then transformers' defaults (top_k 50)
    assert effective_sampling(SamplingConfig(do_sample=True, temperature=1.0, min_p=0.05), ckpt) == {
        "max_tokens": 256, "temperature": 1.0, "top_p": 0.95, "top_k": 20, "min_p": 0.05}
    assert effective_sampling(SamplingConfig(do_sample=True), GenerationConfig())["top_k"] == 50


# -- slow: one engine on the testbed's thinking checkpoint ------------------------------------------
@pytest.fixture(scope="module")
def thinking(testbed_pair):
    from thinkswitch.engines.vllm_backend import VLLMBackend

    cfg = compose()
    backend = VLLMBackend.load(testbed_pair.thinking, model_cfg=cfg.model, device=CPU, gen_cfg=cfg.generation)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def questions():
    from thinkswitch.data.domains import load_domain
    from thinkswitch.engines.chat import chat_prompt  # noqa: F401

    cfg = compose(["domain.eval_size=256"])
    return load_domain(cfg.domain, cfg.model)[1]


@pytest.mark.slow
def test_greedy_matches_hf(thinking, testbed_pair, questions):
    from thinkswitch.data.grading import get_grader
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.hf import generate_texts
    from thinkswitch.engines.models import load_model
    from thinkswitch.stages.evaluate import final_answer

    cfg = compose()
    sampling = SamplingConfig(max_new_tokens=cfg.model.sampling.thinking.max_new_tokens)  # greedy
    prompts = [chat_prompt(thinking.tokenizer, q["prompt"], cfg.domain.system_prompt) for q in questions]
    ours = thinking.generate(prompts, sampling, seed=0, desc="vllm")
    model = load_model(testbed_pair.thinking, cfg.model, CPU)
    ref = generate_texts(model, thinking.tokenizer, prompts, sampling, 64, seed=0, desc="hf")
    assert len(ours) == len(ref) == len(questions) >= 200
    same = [a == b for a, b in zip(ours, ref)]  # output, tokens and stopped
    assert sum(same) / len(same) >= 0.95, f"{sum(same)}/{len(same)} identical"
    grader = get_grader(cfg.domain.grader)

    def accuracy(gens):
        return sum(bool(grader(final_answer(g["output"], "thinking"), q["answer"])[1])
                   for g, q in zip(gens, questions)) / len(questions)

    assert abs(accuracy(ours) - accuracy(ref)) <= 0.01
    assert accuracy(ours) > 0.8  # the testbed's thinking model solves its task
    assert all(g["stopped"] and "</think>" in g["output"] for g in ours[:20])


@pytest.mark.slow
def test_seeded_sampling_is_reproducible_with_n_samples(thinking, questions):
    from thinkswitch.engines.chat import chat_prompt

    # hot enough that the confident testbed model's samples differ (at 0.6 they rarely do)
    sampling = SamplingConfig(do_sample=True, temperature=1.5, top_p=0.95, top_k=40, min_p=0.01, max_new_tokens=64)
    prompts = [chat_prompt(thinking.tokenizer, q["prompt"]) for q in questions[:24]]
    first = thinking.generate(prompts, sampling, seed=7, n=3)
    assert len(first) == 3 * len(prompts)
    assert thinking.generate(prompts, sampling, seed=7, n=3) == first
    # the same request seeded alike answers alike whatever else is in the batch
    assert thinking.generate(prompts[:1], sampling, seed=7, n=3) == first[:3]
    assert thinking.generate(prompts, sampling, seed=8, n=3) != first
    per_prompt = [first[i:i + 3] for i in range(0, len(first), 3)]
    assert any(len({g["output"] for g in group}) > 1 for group in per_prompt), "n samples all identical"
    # more prompt tokens than one engine step takes (vLLM would prefill some in chunks, which fails on
    # CPU for seeded requests unless chunked prefill is off)
    everything = [chat_prompt(thinking.tokenizer, q["prompt"]) for q in questions]
    assert len(thinking.generate(everything, sampling, seed=3)) == len(everything)
    # short max_new_tokens: cut-off answers report stopped=False and count exactly the limit
    cut = thinking.generate(prompts[:4], SamplingConfig(max_new_tokens=5), seed=0)
    assert all(not g["stopped"] and g["tokens"] == 5 for g in cut)


@pytest.mark.slow
def test_closing_leaves_no_engine(thinking):
    worker = thinking.worker
    assert worker.alive()
    thinking.close()
    assert not worker.alive(), f"processes left: {worker.processes()}"
    assert worker.proc.returncode == 0
    assert "vllm" not in sys.modules
    thinking.close()  # idempotent


@pytest.mark.slow
def test_worker_errors_carry_the_workers_message(testbed_pair):
    """A setting only vLLM can judge (the model's own context length) fails with vLLM's words."""
    from thinkswitch.engines.vllm_backend import VLLMBackend, WorkerError

    cfg = compose(["generation.vllm.max_model_len=100000"])  # the testbed model has 512 positions
    with pytest.raises(WorkerError, match=r"max_model_len \(100000\) is greater than"):
        VLLMBackend.load(testbed_pair.thinking, model_cfg=cfg.model, device=CPU, gen_cfg=cfg.generation)
