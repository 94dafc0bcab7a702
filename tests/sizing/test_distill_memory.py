"""Issue 26, finding 9: distillation's memory as the libraries spend it: QLoRA's activations in fp32 (peft upcasts the
embedding), and the host RAM a CPU adapter merge needs, checked when the run starts."""

import pytest

from thinkswitch.errors import ConfigError
from thinkswitch.sizing.distill_memory import activation_elements_per_token, plan_distill
from thinkswitch.sizing.shapes import QWEN3_4B_2507, GiB, Shape, fmt_bytes

PAPER_LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
PAPER_SFT = dict(max_length=4096, per_device_train_batch_size=1, activation_checkpointing=True)


def test_qlora_activations_are_fp32_as_peft_upcasts_the_embedding():
    """Issue 26, finding 9: `prepare_model_for_kbit_training` casts the embedding (and every other parameter that is
    not 4-bit) to fp32, and bitsandbytes' Linear4bit returns its input's dtype: the checkpointed layer inputs are
    fp32, 36 x 2,560 x 4 bytes x 4,096 tokens = 1.4 GiB (1.5 GB) on the paper setting, not 0.75 GB."""
    import inspect

    from peft.utils.other import prepare_model_for_kbit_training

    assert "param.data = param.data.to(torch.float32)" in inspect.getsource(prepare_model_for_kbit_training)
    kw = dict(dtype="bfloat16", lora=PAPER_LORA, sft=PAPER_SFT, free_bytes=80 * GiB, device="cuda:0")
    qlora, lora = plan_distill(QWEN3_4B_2507, quantize_4bit=True, **kw), plan_distill(QWEN3_4B_2507,
                                                                                       quantize_4bit=False, **kw)
    recomputed = 4096 * activation_elements_per_token(Shape.from_config(QWEN3_4B_2507), PAPER_LORA['lora_dropout'])
    assert qlora.parts["activations (checkpointed, fp32)"] == 4096 * 36 * 2560 * 4 + 4 * recomputed
    assert 1.4e9 < 4096 * 36 * 2560 * 4 < 1.6e9
    assert lora.parts["activations (checkpointed, bfloat16)"] == 4096 * 36 * 2560 * 2 + 2 * recomputed


def test_a_cpu_adapter_merge_without_the_host_ram_is_refused_at_start():
    """Issue 26, finding 9: after QLoRA on an 8 GB card the merge runs on the CPU (`distill.merge_device=auto`) and
    needs ~10 GiB of host RAM for Qwen3-4B (the bf16 base with the adapter, the shard being written, CUDA's share of
    the process); the run's start-up plan checks it against the host's available memory (given here: the seam)."""
    import torch

    from tests.support.shared import compose
    from thinkswitch.sizing.distill_memory import CUDA_HOST_BYTES
    from thinkswitch.sizing.run_plan import plan_distillation

    cfg = compose(["experiment=paper_aime"])
    card = torch.device("cuda")  # a device name only: CUDA is not started
    plan = plan_distillation(cfg, QWEN3_4B_2507, "bfloat16", card, int(7.28 * GiB), host_available=32 * GiB)
    assert plan.merge_device == "cpu" and plan.host_bytes == plan.merge_bytes + 10**9 + CUDA_HOST_BYTES
    assert 10e9 < plan.host_bytes < 11e9 and "of host RAM" in plan.describe()
    with pytest.raises(ConfigError) as e:
        plan_distillation(cfg, QWEN3_4B_2507, "bfloat16", card, int(7.28 * GiB), host_available=6 * GiB)
    msg = str(e.value)
    assert msg.startswith("distill.merge_device: the adapter merge runs on the CPU") and "\n" not in msg
    assert f"needs ~{fmt_bytes(plan.host_bytes)} of host RAM" in msg and "6.0 GiB available" in msg
    # on a card that holds the merge, nothing is asked of the host
    h100 = plan_distillation(cfg, QWEN3_4B_2507, "bfloat16", card, int(78 * GiB), host_available=1 * GiB)
    assert h100.merge_device == "cuda" and h100.host_bytes == 0
