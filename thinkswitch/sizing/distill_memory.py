"""The distillation memory estimate, made before any model loads, and where the adapter merge runs.

Peak memory of the distill stage by part: the base (NF4 or the load dtype), LoRA weights with their
gradients and optimizer states, activations (a per-token, per-layer element count of the tensors autograd
keeps, documented at `activation_elements_per_token`, not measured) and the LM head. Allocator
fragmentation, CUDA context and library workspaces are not modelled. After QLoRA the adapter is merged
into a full-precision reload of the base (7.6 GiB for Qwen3-4B in bf16): `choose_merge_device` puts that
merge on the CPU when the card cannot hold it (`distill.merge_device=auto`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from thinkswitch.config import MergeDevice
from thinkswitch.errors import ConfigError
from thinkswitch.sizing.shapes import GiB, Shape, dtype_bytes, fmt_bytes, layout_notes
from thinkswitch.sizing.weights import Tensor, config_tensors, lora_param_count, nf4_weight_bytes, weight_bytes

MERGE_MARGIN = 0.1  # share of the free memory the merge leaves unused (the allocator, the adapter's own tensors)
SHARD_BYTES = 10**9  # `shard_size`'s default (1GB): the checkpoint shard being written
# assumed: what a CUDA run's process holds in host RAM by the merge beyond what it held at start (CUDA's context and
# the kernels of its libraries, cuBLAS and cuDNN, resident once used; the start-up check runs before CUDA starts)
CUDA_HOST_BYTES = 3 * GiB // 2


def choose_merge_device(setting: str, *, device_type: str, merge_bytes: int, free_bytes: int,
                        margin: float = MERGE_MARGIN) -> tuple[str, str]:
    """Where the adapter is merged into the full-precision base, and why (for the log).

    `auto`: on the card when the base and adapter (`merge_bytes`) fit in `free_bytes` less `margin`, else on
    the CPU; `cpu` / `cuda`: as asked. A run that is not on CUDA merges where it runs; `cuda` there is a
    ConfigError. Pure arithmetic: the numbers come from the caller (`plan_distill`, or the stage measuring
    the card's free memory after the 4-bit model is freed)."""
    if setting not in MergeDevice.values():
        raise ConfigError(f"distill.merge_device: expected one of {MergeDevice.values()}, got {setting!r}")
    if device_type != "cuda":
        if setting == MergeDevice.cuda:
            raise ConfigError(f"distill.merge_device=cuda: the run's device is {device_type}, not CUDA")
        return device_type, f"the run is on {device_type}"
    if setting != MergeDevice.auto:
        return str(setting), f"distill.merge_device={setting}"
    need, room = fmt_bytes(merge_bytes), fmt_bytes(free_bytes * (1 - margin))
    if merge_bytes <= free_bytes * (1 - margin):
        return "cuda", f"the full-precision base with the adapter ({need}) fits the card ({room} usable)"
    return "cpu", f"the full-precision base with the adapter ({need}) does not fit the card ({room} usable)"


def activation_elements_per_token(shape: Shape, lora_dropout: float = 0.0) -> int:
    """Elements autograd keeps per token per decoder layer in LoRA training (SDPA/flash attention: no
    attention matrix). Attention: the norm's input and output (2h), q/k/v and their normed/rotated copies
    (3 q + 3 kv), the attention output (q); MLP: norm in/out (2h), gate, up, act(gate), product (4 i); with
    LoRA dropout a dropped copy of each adapted projection's input (3h + q + 2h + i). An estimate."""
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    attention = 2 * h + 3 * q + 3 * kv + q
    mlp = 2 * h + 4 * i
    dropout = (5 * h + q + i) if lora_dropout else 0
    return attention + mlp + dropout


def activation_bytes(dtype: str, quantize_4bit: bool) -> int:
    """Bytes per activation element. QLoRA: fp32 whatever `dtype`. peft 0.21's `prepare_model_for_kbit_training`
    casts every parameter that is not 4-bit (`Params4bit`) to fp32, the input embedding and the norms included, so
    the embedding's output is fp32; bitsandbytes' `Linear4bit.forward` computes in its compute dtype and returns
    its input's dtype (`.to(inp_dtype)`), and Qwen3's RMSNorm multiplies by its (now fp32) weight: the residual
    stream, each checkpointed layer input, and the tensors a layer keeps are fp32 (Qwen3-4B at 4,096 tokens per
    step: 1.5 GB of checkpointed inputs, not 0.75). LoRA on a bf16 base: `dtype`."""
    return 4 if quantize_4bit else dtype_bytes(dtype)


@dataclass(frozen=True)
class DistillPlan:
    """An estimate of the distill stage's peak memory, by part. Not exact: see the module docstring."""

    device: str
    parts: dict[str, int]  # the training step's memory, by part
    merge_bytes: int  # merging the adapter: QLoRA reloads the base in full precision (0: merged in place)
    free_bytes: int  # before the base loads
    quantize_4bit: bool
    activation_checkpointing: bool
    tokens: int  # per_device_train_batch_size x max_length
    notes: tuple[str, ...] = field(default=())
    merge_device: str = "cuda"  # where the QLoRA merge runs (`choose_merge_device`)
    merge_reason: str = ""
    host_bytes: int = 0  # host RAM the merge needs when it runs on the CPU (`merge_host_bytes`); 0: not there

    @property
    def train_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def merge_on_card(self) -> bool:
        return bool(self.merge_bytes) and self.merge_device == self.device.split(":")[0]

    @property
    def peak_bytes(self) -> int:
        """On the run's device: the merge counts only where it runs there."""
        return max(self.train_bytes, self.merge_bytes if self.merge_on_card else 0)

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.free_bytes

    def warning(self) -> Optional[str]:
        """A warning to log when the estimate is above the free memory (None when it fits)."""
        if self.fits:
            return None
        head = (f"distill may not fit on {self.device}: an estimated {fmt_bytes(self.peak_bytes)} "
                f"(estimates are not exact) against {fmt_bytes(self.free_bytes)} free")
        if self.merge_on_card and self.merge_bytes > self.free_bytes and self.merge_bytes >= self.train_bytes:
            return (f"{head}; after QLoRA training the adapter is merged into the base reloaded in full precision "
                    f"({fmt_bytes(self.merge_bytes)}), which no training setting lowers: distill.merge_device=cpu")
        hint = "trainer.sft.activation_checkpointing=true, " if not self.activation_checkpointing else ""
        return (f"{head}; consider {hint}a lower trainer.sft.max_length or per_device_train_batch_size"
                + ("" if self.quantize_4bit else ", or trainer=qlora"))

    def describe(self) -> str:
        """One paragraph for the log."""
        parts = ", ".join(f"{name} {fmt_bytes(n)}" for name, n in self.parts.items())
        merge = ""
        if self.merge_bytes:
            merge = (f"; merging the adapter into the full-precision base {fmt_bytes(self.merge_bytes)}"
                     + ("" if self.merge_on_card else f" on {self.merge_device}")
                     + (f" ({self.merge_reason})" if self.merge_reason else "")
                     + (f", ~{fmt_bytes(self.host_bytes)} of host RAM" if self.host_bytes else ""))
        text = (f"distill memory estimate on {self.device} (not exact): training {fmt_bytes(self.train_bytes)} = "
                f"{parts}, at {self.tokens:,} tokens per step{merge}"
                f"; peak {fmt_bytes(self.peak_bytes)} of {fmt_bytes(self.free_bytes)} free"
                + ("" if self.fits else " (above the free memory)"))
        return text + (f"; note: {'; '.join(self.notes)}" if self.notes else "") + "."


def plan_distill(config: Mapping, *, dtype: str, quantize_4bit: bool, lora: Mapping, sft: Mapping,
                 free_bytes: int, device: str = "cpu", tensors: Optional[Sequence[Tensor]] = None,
                 bnb: Optional[Mapping] = None, optimizer_state_bytes: int = 8,
                 merge_device: MergeDevice = MergeDevice.auto, shard_bytes: int = SHARD_BYTES) -> DistillPlan:
    """Estimate the distill stage: base weights (4-bit NF4 or `dtype`) + LoRA weights + their gradients and
    optimizer states (fp32; AdamW: 8 bytes per parameter) + activations at `sft.max_length` x
    `sft.per_device_train_batch_size` (with or without activation checkpointing). `lora`, `sft` and `bnb` are
    `trainer.lora`, `trainer.sft` and `trainer.bnb`; `tensors` (safetensors headers) default to the config's.
    With QLoRA the adapter is merged into a full-precision reload of the base: `merge_bytes`, on the device
    `choose_merge_device` picks from `merge_device` (`distill.merge_device`); on the CPU, the host RAM it needs
    (`merge_host_bytes`, with shards of `shard_bytes`)."""
    shape = Shape.from_config(config)
    tensors = list(tensors) if tensors is not None else config_tensors(config)
    r = int(lora.get("r", 8))
    lora_params = lora_param_count(tensors, r, lora.get("target_modules") or "all-linear")
    max_length = int(sft.get("max_length") or 1024)  # TRL's default
    batch = int(sft.get("per_device_train_batch_size", 8))  # transformers' default
    checkpointing = bool(sft.get("activation_checkpointing") or sft.get("gradient_checkpointing"))
    tokens = max_length * batch
    act_bytes = activation_bytes(dtype, quantize_4bit)
    per_layer = activation_elements_per_token(shape, float(lora.get("lora_dropout") or 0.0)) * act_bytes
    if checkpointing:  # each layer's input kept; one layer's activations recomputed at a time
        activations = tokens * (shape.layers * shape.hidden * act_bytes + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    # the LM head: TRL computes log-probabilities in vocabulary chunks (no full logits); its hidden states
    # and their gradient in fp32 remain
    head = tokens * shape.hidden * 4 * 2
    double_quant = bool((bnb or {}).get("bnb_4bit_use_double_quant", False))
    base = nf4_weight_bytes(tensors, double_quant) if quantize_4bit else weight_bytes(tensors, dtype)
    parts = {
        "base weights" + (" (NF4 + fp32 rest)" if quantize_4bit else f" ({dtype})"): base,
        "LoRA weights (fp32)": lora_params * 4,
        "LoRA gradients + optimizer states": lora_params * (4 + optimizer_state_bytes),
        f"activations ({'checkpointed, ' if checkpointing else ''}{'fp32' if act_bytes == 4 else dtype})": activations,
        "LM head": head,
    }
    merge = weight_bytes(tensors, dtype) + lora_params * 4 if quantize_4bit else 0
    where, why = device.split(":")[0], ""
    if merge:
        where, why = choose_merge_device(merge_device, device_type=device.split(":")[0], merge_bytes=merge,
                                         free_bytes=free_bytes)
    host = merge_host_bytes(merge, shard_bytes, cuda=device.startswith("cuda")) if merge and where == "cpu" else 0
    return DistillPlan(device=device, parts=parts, merge_bytes=merge, free_bytes=free_bytes,
                       quantize_4bit=quantize_4bit, activation_checkpointing=checkpointing, tokens=tokens,
                       notes=tuple(layout_notes(config)), merge_device=where, merge_reason=why, host_bytes=host)


def merge_host_bytes(merge_bytes: int, shard_bytes: int = SHARD_BYTES, cuda: bool = True) -> int:
    """Host RAM a CPU adapter merge needs (an estimate): the base reloaded in the run's dtype with the adapter in
    fp32 (`merge_bytes`: 7.6 GiB for Qwen3-4B in bf16), merged in place (peft's `merge_and_unload`), the checkpoint
    being written (one shard's pages held by the page cache until they reach the disk: at most `shard_size`) and, on
    a CUDA run, what its process has grown by since start (`CUDA_HOST_BYTES`). About 10 GiB (10.7 GB) for Qwen3-4B
    with 1 GB shards on a CUDA run."""
    return merge_bytes + min(shard_bytes, merge_bytes) + (CUDA_HOST_BYTES if cuda else 0)


def check_merge_host_memory(plan: DistillPlan, available: int) -> None:
    """A ConfigError, with the numbers, when the CPU adapter merge `plan` holds needs more host RAM than
    `available` (MemAvailable, measured at start): refused before anything is spent, not hours in."""
    if not plan.host_bytes or plan.host_bytes <= available:
        return
    raise ConfigError(
        f"distill.merge_device: the adapter merge runs on the CPU ({plan.merge_reason}) and needs ~"
        f"{fmt_bytes(plan.host_bytes)} of host RAM (the base in full precision with the adapter, "
        f"{fmt_bytes(plan.merge_bytes)}, and the shard being written); {fmt_bytes(available)} available; free host "
        "memory, lower shard_size, or merge on a card with more free memory (distill.merge_device=cuda)")
