"""The memory plan: literal arithmetic on Qwen3-4B's and the testbed's configs, refusals, monotonicity."""

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinkswitch.engines.free_memory import meminfo_available
from thinkswitch.sizing.distill_memory import choose_merge_device, plan_distill
from thinkswitch.sizing.memory import describe, plan_generation, plan_generation_for
from thinkswitch.sizing.shapes import (
    QWEN3_4B_2507,
    GiB,
    Shape,
    dtype_bytes,
    fmt_bytes,
    kv_bytes_per_token,
    layout_notes,
    load_config,
    resolve_dtype,
)
from thinkswitch.sizing.weights import (
    checkpoint_tensors,
    config_tensors,
    generation_weight_bytes,
    is_linear_weight,
    lora_param_count,
    nf4_bytes_per_param,
    nf4_weight_bytes,
    numel,
    param_count,
    safetensors_tensors,
    weight_bytes,
)
from thinkswitch.validate import ConfigError

QWEN_KV = 36 * 8 * 128 * 2 * 2  # layers x KV heads x head_dim x (K, V) x bf16 bytes
QWEN_PARAMS = 151936 * 2560 + 36 * (2560 * 4096 * 2 + 2560 * 1024 * 2 + 3 * 2560 * 9728 + 2 * 128 + 2 * 2560) + 2560
PAPER_LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
PAPER_SFT = dict(max_length=4096, per_device_train_batch_size=1, activation_checkpointing=True)


# --- Qwen3-4B: the paper's model ------------------------------------------------------------------------------

def test_qwen3_4b_kv_cache_is_144_kib_per_token_and_4_5_gib_per_32k_sequence():
    assert kv_bytes_per_token(QWEN3_4B_2507, "bfloat16") == QWEN_KV == 147456 == 144 * 1024
    assert QWEN_KV * 32768 == 4.5 * GiB
    assert fmt_bytes(QWEN_KV * 32768) == "4.5 GiB" and fmt_bytes(QWEN_KV) == "144.0 KiB"
    assert kv_bytes_per_token(QWEN3_4B_2507, "float32") == 2 * QWEN_KV


def test_qwen3_4b_weights_from_its_config():
    tensors = config_tensors(QWEN3_4B_2507)
    assert param_count(tensors) == QWEN_PARAMS == 4_022_468_096  # the model card: 4.0B, 3.6B non-embedding
    non_embedding = QWEN_PARAMS - 151936 * 2560
    assert 3.6e9 <= non_embedding < 3.65e9
    assert weight_bytes(tensors, "bfloat16") == 2 * QWEN_PARAMS  # ~7.5 GiB
    assert "lm_head.weight" not in dict(tensors)  # tied embeddings
    untied = config_tensors({**QWEN3_4B_2507, "tie_word_embeddings": False})
    assert param_count(untied) == QWEN_PARAMS + 151936 * 2560


def test_qwen3_4b_nf4_base_for_qlora():
    tensors = config_tensors(QWEN3_4B_2507)
    linear = 36 * (2560 * 4096 * 2 + 2560 * 1024 * 2 + 3 * 2560 * 9728)
    rest = QWEN_PARAMS - linear  # embeddings and norms: fp32 after prepare_model_for_kbit_training
    assert nf4_bytes_per_param(True) == 0.5 + 1 / 64 + 4 / (64 * 256)
    assert nf4_bytes_per_param(False) == 0.5 + 4 / 64
    assert nf4_weight_bytes(tensors, double_quant=True) == int(linear * nf4_bytes_per_param(True)) + rest * 4
    assert 3.1 * GiB < nf4_weight_bytes(tensors) < 3.3 * GiB
    assert nf4_weight_bytes(tensors, rest_dtype="bfloat16") < nf4_weight_bytes(tensors)


def test_qwen3_4b_lora_parameters():
    tensors = config_tensors(QWEN3_4B_2507)
    per_layer = 16 * ((2560 + 4096) * 2 + (2560 + 1024) * 2 + (2560 + 9728) * 3)
    assert lora_param_count(tensors, 16) == 36 * per_layer == 33_030_144
    assert lora_param_count(tensors, 16, ["q_proj", "v_proj"]) == 36 * 16 * ((2560 + 4096) + (2560 + 1024))
    assert lora_param_count(tensors, 16, "q_proj") == 36 * 16 * (2560 + 4096)


def test_qwen3_4b_paper_generation_is_refused_with_the_numbers():
    """The issue's case: 32,768 new tokens, 2.1 GiB free after the weights on cuda:0."""
    weights = 2 * QWEN_PARAMS
    with pytest.raises(ConfigError) as e:
        plan_generation(kv_bytes_per_token=QWEN_KV, prompt_tokens=[120, 250], max_new_tokens=32768,
                        free_bytes=weights + int(2.1 * GiB), weight_bytes=weights, batch_size=8, device="cuda:0")
    msg = str(e.value)
    assert msg.startswith("max_new_tokens=32768 needs 4.5 GiB of KV cache per sequence (250 prompt + 32768 new")
    assert "2.1 GiB free after weights on cuda:0" in msg and "7.5 GiB of weights" in msg
    assert "lower model.sampling.thinking.max_new_tokens" in msg


def test_weights_that_do_not_fit_are_refused():
    with pytest.raises(ConfigError, match=r"the weights need 7\.5 GiB; 7\.0 GiB free on cuda:0"):
        plan_generation(kv_bytes_per_token=QWEN_KV, prompt_tokens=[100], max_new_tokens=8, free_bytes=7 * GiB,
                        weight_bytes=2 * QWEN_PARAMS, batch_size=8, device="cuda:0")


def test_qwen3_4b_batch_on_an_80_gib_card():
    weights = 2 * QWEN_PARAMS
    plan = plan_generation(kv_bytes_per_token=QWEN_KV, prompt_tokens=[256] * 15, max_new_tokens=32768,
                           free_bytes=79 * GiB, weight_bytes=weights, batch_size=64, device="cuda:0")
    budget = int((79 * GiB - weights) * 0.9) // QWEN_KV
    assert plan.token_budget == budget
    assert plan.batch_size == budget // (256 + 32768) == 14 and plan.binding
    assert plan.batches == 2 and plan.sequences == 15
    text = describe(plan)
    assert "144.0 KiB/token" in text and "batches of up to 14 (the memory limit; generation.batch_size=64)" in text


def test_batch_size_is_an_upper_bound_when_the_budget_does_not_bind():
    plan = plan_generation(kv_bytes_per_token=1000, prompt_tokens=[10, 20, 30], max_new_tokens=70,
                           samples_per_prompt=4, free_bytes=10**9, batch_size=5)
    assert plan.batch_size == 5 and not plan.binding and plan.sequences == 12 and plan.batches == 3
    assert plan.sequence_tokens == 100 and plan.sequence_bytes == 100_000


def test_budget_binds_at_the_exact_boundary():
    # after weights 1,000,000 B, no margin: 10,000 tokens of 100 B; sequences of 50 + 950 = 1000 tokens: 10 rows
    kw = dict(kv_bytes_per_token=100, prompt_tokens=[50], max_new_tokens=950, weight_bytes=500, batch_size=64,
              margin=0.0)
    assert plan_generation(free_bytes=1_000_500, **kw).batch_size == 1  # one prompt, one sequence
    assert plan_generation(free_bytes=1_000_500, **{**kw, "prompt_tokens": [50] * 20}).batch_size == 10
    assert plan_generation(free_bytes=1_000_499, **{**kw, "prompt_tokens": [50] * 20}).batch_size == 9
    plan_generation(free_bytes=100_500, **kw)  # exactly one sequence fits
    with pytest.raises(ConfigError, match="needs 97.7 KiB of KV cache per sequence"):
        plan_generation(free_bytes=100_499, **kw)


@settings(max_examples=200, deadline=None)
@given(free=st.integers(8 * GiB, 200 * GiB), extra=st.integers(0, 100 * GiB),
       new=st.integers(1, 65536), more=st.integers(0, 65536), cap=st.integers(1, 256))
def test_plan_is_monotonic_in_free_memory_and_max_new_tokens(free, extra, new, more, cap):
    kw = dict(kv_bytes_per_token=QWEN_KV, prompt_tokens=[300] * 300, weight_bytes=2 * QWEN_PARAMS, batch_size=cap)

    def batch(free_bytes, max_new_tokens):
        try:
            return plan_generation(free_bytes=free_bytes, max_new_tokens=max_new_tokens, **kw).batch_size
        except ConfigError:
            return 0

    assert batch(free, new) <= batch(free + extra, new)  # more memory: never a smaller batch
    assert batch(free, new + more) <= batch(free, new)  # longer outputs: never a larger batch
    assert batch(free, new) <= cap


def test_plan_arguments_are_checked():
    with pytest.raises(ValueError, match="margin"):
        plan_generation(kv_bytes_per_token=1, prompt_tokens=[1], max_new_tokens=1, free_bytes=10, batch_size=1,
                        margin=1.0)
    with pytest.raises(ValueError, match=">= 1"):
        plan_generation(kv_bytes_per_token=1, prompt_tokens=[1], max_new_tokens=0, free_bytes=10, batch_size=1)


# --- configs and checkpoints ----------------------------------------------------------------------------------

def test_head_dim_absent_or_null_is_hidden_over_heads():
    llama = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
             "vocab_size": 32000, "intermediate_size": 14336}
    assert Shape.from_config(llama).head_dim == 128
    assert kv_bytes_per_token(llama, "float16") == 32 * 8 * 128 * 2 * 2
    assert kv_bytes_per_token({**llama, "head_dim": None}, "float16") == 32 * 8 * 128 * 2 * 2
    mha = {k: v for k, v in llama.items() if k != "num_key_value_heads"}  # no KV heads: one per attention head
    assert kv_bytes_per_token(mha, "float16") == 32 * 32 * 128 * 2 * 2
    nested = {"model_type": "vlm", "text_config": llama}
    assert kv_bytes_per_token(nested, "float16") == kv_bytes_per_token(llama, "float16")
    with pytest.raises(ValueError, match="num_attention_heads"):
        Shape.from_config({"hidden_size": 8})


def test_layouts_out_of_scope_are_noted():
    assert layout_notes(QWEN3_4B_2507) == []
    assert "sliding-window" in layout_notes({**QWEN3_4B_2507, "use_sliding_window": True, "sliding_window": 4096})[0]
    assert "sliding-window" in layout_notes({**QWEN3_4B_2507, "use_sliding_window": None, "sliding_window": 4096})[0]
    hybrid = {**QWEN3_4B_2507, "layer_types": ["linear_attention", "full_attention"]}
    assert "linear_attention" in layout_notes(hybrid)[0]
    moe = {**QWEN3_4B_2507, "num_experts": 128}
    assert any("mixture of experts" in n for n in layout_notes(moe))
    with pytest.raises(ValueError, match="mixture-of-experts"):
        config_tensors(moe)


def test_dtypes():
    assert dtype_bytes("bfloat16") == dtype_bytes("torch.float16") == 2 and dtype_bytes("float32") == 4
    with pytest.raises(ValueError, match="unknown dtype"):
        dtype_bytes("float12")
    assert resolve_dtype("auto", "cuda:0") == "bfloat16" and resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda", bf16_supported=False) == "float32"
    assert resolve_dtype("float16", "cpu") == "float16"


def test_safetensors_headers_give_the_shapes(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a.weight": torch.zeros(3, 5), "b": torch.zeros(7, dtype=torch.bfloat16)}, tmp_path / "x.safetensors",
              metadata={"format": "pt"})
    save_file({"c.weight": torch.zeros(2, 2, 2)}, tmp_path / "y.safetensors")
    assert sorted(safetensors_tensors(tmp_path)) == [("a.weight", (3, 5)), ("b", (7,)), ("c.weight", (2, 2, 2))]
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_4B_2507))
    tensors, source = checkpoint_tensors(tmp_path)
    assert source == "safetensors headers" and param_count(tensors) == 15 + 7 + 8
    with pytest.raises(ValueError, match="no config.json"):
        load_config(tmp_path / "missing")
    assert load_config("Qwen/Qwen3-4B-Thinking-2507")["num_hidden_layers"] == 36


def test_meminfo_available(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   12345678 kB\n")
    assert meminfo_available(f) == 12345678 * 1024
    f.write_text("MemTotal: 1 kB\n")
    with pytest.raises(ValueError, match="MemAvailable"):
        meminfo_available(f)
    assert 0 < meminfo_available() < 2**50  # this machine's


# --- distillation ---------------------------------------------------------------------------------------------

def test_distill_estimate_for_the_paper_qlora():
    plan = plan_distill(QWEN3_4B_2507, dtype="bfloat16", quantize_4bit=True, lora=PAPER_LORA, sft=PAPER_SFT,
                        bnb={"bnb_4bit_use_double_quant": True}, free_bytes=70 * GiB, device="cuda:0")
    tensors = config_tensors(QWEN3_4B_2507)
    parts = plan.parts
    assert parts["base weights (NF4 + fp32 rest)"] == nf4_weight_bytes(tensors, True)
    assert parts["LoRA weights (fp32)"] == 33_030_144 * 4
    assert parts["LoRA gradients + optimizer states"] == 33_030_144 * 12
    assert plan.tokens == 4096 and plan.activation_checkpointing
    assert plan.train_bytes == sum(parts.values())
    assert plan.merge_bytes == 2 * QWEN_PARAMS + 33_030_144 * 4  # the bf16 reload the adapter is merged into
    assert plan.peak_bytes == max(plan.train_bytes, plan.merge_bytes) and plan.fits and plan.warning() is None
    assert "distill memory estimate on cuda:0 (not exact)" in describe(plan)


def test_distill_activation_checkpointing_and_4bit_lower_the_estimate():
    kw = dict(dtype="bfloat16", lora=PAPER_LORA, free_bytes=80 * GiB, device="cuda:0")
    ckpt = plan_distill(QWEN3_4B_2507, quantize_4bit=True, sft=PAPER_SFT, **kw)
    full = plan_distill(QWEN3_4B_2507, quantize_4bit=True, sft={**PAPER_SFT, "activation_checkpointing": False}, **kw)
    act = lambda p: next(v for k, v in p.parts.items() if k.startswith("activations"))  # noqa: E731
    assert act(full) > 10 * act(ckpt)  # every layer's activations vs each layer's input
    lora = plan_distill(QWEN3_4B_2507, quantize_4bit=False, sft=PAPER_SFT, **kw)
    assert lora.parts["base weights (bfloat16)"] == 2 * QWEN_PARAMS > 2 * ckpt.parts["base weights (NF4 + fp32 rest)"]
    assert lora.merge_bytes == 0
    double = plan_distill(QWEN3_4B_2507, quantize_4bit=True, sft=PAPER_SFT, bnb={"bnb_4bit_use_double_quant": True},
                          **kw)
    assert double.train_bytes < ckpt.train_bytes


def test_distill_warnings_name_what_to_change():
    kw = dict(dtype="bfloat16", lora=PAPER_LORA, device="cuda:0")
    tight = plan_distill(QWEN3_4B_2507, quantize_4bit=True, sft=PAPER_SFT, free_bytes=7 * GiB, merge_device="cuda",
                         **kw)
    assert not tight.fits and "full precision" in tight.warning() and "not exact" in tight.warning()
    assert "distill.merge_device=cpu" in tight.warning()
    # auto: the bf16 base does not fit 7 GiB, so the merge goes to the CPU and training alone is on the card
    auto = plan_distill(QWEN3_4B_2507, quantize_4bit=True, sft=PAPER_SFT, free_bytes=7 * GiB, **kw)
    assert auto.merge_device == "cpu" and not auto.merge_on_card and auto.fits and auto.warning() is None
    assert auto.peak_bytes == auto.train_bytes < 7 * GiB < auto.merge_bytes
    assert "on cpu (the full-precision base with the adapter (7.6 GiB) does not fit" in describe(auto)
    big = plan_distill(QWEN3_4B_2507, quantize_4bit=False, sft={**PAPER_SFT, "activation_checkpointing": False,
                                                                 "per_device_train_batch_size": 8},
                       free_bytes=24 * GiB, **kw)
    warning = big.warning()
    assert "activation_checkpointing=true" in warning and "trainer=qlora" in warning
    assert "(above the free memory)" in describe(big)


def test_merge_device_choice_from_the_numbers():
    """`distill.merge_device`: auto merges on the card when the bf16 base fits its free memory less 10%."""
    base = 2 * QWEN_PARAMS + 33_030_144 * 4  # Qwen3-4B in bf16 with the paper's adapter: 7.6 GiB
    pick = lambda setting, free, device="cuda": choose_merge_device(  # noqa: E731
        setting, device_type=device, merge_bytes=base, free_bytes=free)
    assert pick("auto", int(7.5 * GiB))[0] == "cpu"  # an 8 GB card less its CUDA context
    assert pick("auto", 23 * GiB)[0] == "cuda"
    assert pick("auto", int(base / 0.9) + 8)[0] == "cuda" and pick("auto", int(base / 0.9) - 8)[0] == "cpu"
    assert pick("cuda", GiB) == ("cuda", "distill.merge_device=cuda")  # as asked, even where it will not fit
    assert pick("cpu", 80 * GiB) == ("cpu", "distill.merge_device=cpu")
    assert pick("auto", 0, device="cpu") == ("cpu", "the run is on cpu")
    with pytest.raises(ConfigError, match="merge_device=cuda: the run's device is cpu"):
        pick("cuda", 80 * GiB, device="cpu")
    with pytest.raises(ConfigError, match="expected one of"):
        pick("gpu", 80 * GiB)


def test_nf4_generation_weights_leave_embeddings_in_the_load_dtype():
    tensors = config_tensors(QWEN3_4B_2507)
    linear = sum(numel(s) for n, s in tensors if is_linear_weight(n, s))
    rest = QWEN_PARAMS - linear
    assert rest == 151936 * 2560 + 36 * (2 * 128 + 2 * 2560) + 2560  # tied embeddings/LM head and the norms
    nf4 = generation_weight_bytes(tensors, "bfloat16", "nf4")
    assert nf4 == int(linear * (0.5 + 4 / 64)) + 2 * rest  # BitsAndBytesConfig's default: no double quantization
    assert generation_weight_bytes(tensors, "bfloat16", "none") == 2 * QWEN_PARAMS
    assert 2.6 * GiB < nf4 < 2.8 * GiB < 7.4 * GiB < 2 * QWEN_PARAMS
    with pytest.raises(ValueError, match="generation.quantization"):
        generation_weight_bytes(tensors, "bfloat16", "int3")
    # an 8 GB card (7.5 GiB free): bf16 weights leave 8 MiB; NF4 leaves 4.9 GiB, 4.4 GiB of it for the KV cache:
    # one trace of 512 + 31,415 tokens, not quite the paper's 32,768 new tokens
    kw = dict(kv_bytes_per_token=QWEN_KV, prompt_tokens=[512] * 15, batch_size=8, free_bytes=int(7.5 * GiB),
              device="cuda:0")
    with pytest.raises(ConfigError, match="generation.quantization=nf4"):
        plan_generation(weight_bytes=2 * QWEN_PARAMS, max_new_tokens=30720, **kw)
    with pytest.raises(ConfigError, match="4.9 GiB free after weights") as e:
        plan_generation(weight_bytes=nf4, quantization="nf4", max_new_tokens=32768, **kw)
    assert "quantization=nf4" not in str(e.value)  # already NF4: not suggested again
    assert int((7.5 * GiB - nf4) * 0.9) // QWEN_KV - 512 == 31415
    plan = plan_generation(weight_bytes=nf4, quantization="nf4", max_new_tokens=31415, **kw)
    assert plan.batch_size == 1 and "(nf4)" in describe(plan)


# --- the testbed ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_testbed_config_and_headers_agree(testbed_pair):
    config = load_config(testbed_pair.thinking)
    assert kv_bytes_per_token(config, "float32") == 3 * 2 * 32 * 2 * 4 == 1536
    headers, source = checkpoint_tensors(testbed_pair.thinking)
    assert source == "safetensors headers"
    assert param_count(headers) == param_count(config_tensors(config))  # the config estimate is exact here
    assert sorted(dict(headers)) == sorted(dict(config_tensors(config)))


@pytest.mark.slow
def test_testbed_impossible_budget_is_refused_in_seconds(testbed_pair):
    """The issue's done-when: max_new_tokens=200000000 on the testbed, refused before any model loads."""
    from tests.support.shared import compose
    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.base import prompt_token_counts
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.models import load_tokenizer

    t0 = time.perf_counter()
    cfg = compose(["model.sampling.thinking.max_new_tokens=200000000"])
    tok = load_tokenizer(testbed_pair.thinking, cfg.model)
    prompts = [chat_prompt(tok, ex["prompt"]) for ex in task_examples(8, 0, "train", TestbedSpec())]
    with pytest.raises(ConfigError) as e:
        plan_generation_for(testbed_pair.thinking, dtype=resolve_dtype(cfg.model.dtype, "cpu"), device="cpu",
                            prompt_tokens=prompt_token_counts(tok, prompts),
                            max_new_tokens=cfg.model.sampling.thinking.max_new_tokens,
                            batch_size=cfg.generation.batch_size)
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "max_new_tokens=200000000 needs 286." in msg and "GiB of KV cache per sequence" in msg
    assert "1.5 KiB/token" in msg and "free after weights on cpu" in msg
    # the default budget fits, and the batch is generation.batch_size
    cfg = compose()
    plan = plan_generation_for(testbed_pair.thinking, dtype="float32", device="cpu",
                               prompt_tokens=prompt_token_counts(tok, prompts),
                               max_new_tokens=cfg.model.sampling.thinking.max_new_tokens,
                               batch_size=cfg.generation.batch_size)
    assert plan.batch_size == min(cfg.generation.batch_size, 8) and not plan.binding
    assert plan.weight_bytes == 4 * param_count(checkpoint_tensors(testbed_pair.thinking)[0])


def test_free_memory_on_cpu_is_the_available_ram():
    from thinkswitch.engines.free_memory import free_memory

    free = free_memory("cpu")
    assert abs(free - meminfo_available()) < 2 * GiB  # the same figure, read moments apart
