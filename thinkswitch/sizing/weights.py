"""A checkpoint's tensors and what its weights take in memory, before anything loads.

Parameter counts come from the safetensors headers of a local checkpoint, or from the config of a dense
decoder (Llama / Qwen2 / Qwen3 / Mistral layout; mixture-of-experts configs need a local checkpoint), times
the bytes of the dtype it is loaded in. 4-bit NF4 (bitsandbytes): 4 bits per linear weight plus its block
scales; embeddings, norms and the LM head stay unquantized (in training cast to fp32 by peft's
`prepare_model_for_kbit_training`; in generation (`generation.quantization=nf4`) left in the load dtype).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from thinkswitch.config import Quantization
from thinkswitch.sizing.shapes import Shape, dtype_bytes, is_moe, load_config

NF4_BLOCK = 64  # bitsandbytes' 4-bit block size (Params4bit default)
NF4_DOUBLE_QUANT_BLOCK = 256  # the blocks of absmax scales quantized again (bnb_4bit_use_double_quant)

Tensor = tuple[str, tuple[int, ...]]  # (name, shape)


def config_tensors(config: Mapping) -> list[Tensor]:
    """The tensors of a dense decoder (Llama / Qwen2 / Qwen3 / Mistral layout) as its config describes it.

    Raises ValueError for a mixture-of-experts config (its experts are not in this layout).
    """
    if is_moe(config):
        raise ValueError("a mixture-of-experts config: its weights cannot be estimated from the config here; "
                         "give a local checkpoint")
    s = Shape.from_config(config)
    h, q, kv, i = s.hidden, s.q_dim, s.kv_dim, s.intermediate
    qkv_bias = s.attention_bias or s.model_type == "qwen2"  # Qwen2 always has q/k/v biases
    out = [("model.embed_tokens.weight", (s.vocab, h))]
    for n in range(s.layers):
        p = f"model.layers.{n}."
        out += [(p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q))]
        if qkv_bias:
            out += [(p + "self_attn.q_proj.bias", (q,)), (p + "self_attn.k_proj.bias", (kv,)),
                    (p + "self_attn.v_proj.bias", (kv,))]
        if s.attention_bias:
            out += [(p + "self_attn.o_proj.bias", (h,))]
        if s.model_type.startswith("qwen3"):
            out += [(p + "self_attn.q_norm.weight", (s.head_dim,)), (p + "self_attn.k_norm.weight", (s.head_dim,))]
        out += [(p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
                (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
    out.append(("model.norm.weight", (h,)))
    if not s.tied:
        out.append(("lm_head.weight", (s.vocab, h)))
    return out


def safetensors_tensors(directory: Union[str, Path]) -> list[Tensor]:
    """The tensors of a local checkpoint, from its safetensors headers (no weights are read)."""
    files = sorted(Path(directory).expanduser().glob("*.safetensors"))
    if not files:
        raise ValueError(f"{directory}: no *.safetensors files")
    out = []
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        out += [(name, tuple(t["shape"])) for name, t in header.items() if name != "__metadata__"]
    return out


def checkpoint_tensors(ref: Union[str, Path], config: Optional[Mapping] = None) -> tuple[list[Tensor], str]:
    """A checkpoint's tensors and where they came from: the safetensors headers of a local directory, else
    the config (estimated)."""
    path = Path(ref).expanduser()
    if path.is_dir() and any(path.glob("*.safetensors")):
        return safetensors_tensors(path), "safetensors headers"
    return config_tensors(load_config(ref, config)), "config (estimated)"


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def param_count(tensors: Iterable[Tensor]) -> int:
    return sum(numel(shape) for _, shape in tensors)


def weight_bytes(tensors: Iterable[Tensor], dtype: Any) -> int:
    """Bytes of the weights loaded in `dtype` (every tensor in that dtype, as `from_pretrained(dtype=...)`)."""
    return param_count(tensors) * dtype_bytes(dtype)


def is_linear_weight(name: str, shape: Sequence[int]) -> bool:
    """A weight bitsandbytes quantizes, and `target_modules=all-linear` adapts: a 2-D projection, not the
    embeddings or the LM head."""
    return len(shape) == 2 and name.endswith(".weight") and "embed" not in name and "lm_head" not in name


def nf4_bytes_per_param(double_quant: bool = True) -> float:
    """4 bits per weight plus the block scales: an fp32 absmax per 64 weights, or with double quantization an
    8-bit absmax per 64 and an fp32 scale per 256 of those."""
    if double_quant:
        return 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_DOUBLE_QUANT_BLOCK)
    return 0.5 + 4 / NF4_BLOCK


def nf4_weight_bytes(tensors: Iterable[Tensor], double_quant: bool = True, rest_dtype: Any = "float32") -> int:
    """A QLoRA base: linear weights in NF4, the rest (embeddings, norms, LM head) in `rest_dtype` (float32:
    peft's `prepare_model_for_kbit_training` upcasts every unquantized bf16/fp16 parameter)."""
    quantized = rest = 0
    for name, shape in tensors:
        if is_linear_weight(name, shape):
            quantized += numel(shape)
        else:
            rest += numel(shape)
    return int(quantized * nf4_bytes_per_param(double_quant)) + rest * dtype_bytes(rest_dtype)


def lora_param_count(tensors: Iterable[Tensor], r: int, target_modules: Any = "all-linear") -> int:
    """LoRA parameters: r x (in + out) per adapted linear layer (`all-linear`, or those whose module name is
    in `target_modules`)."""
    if isinstance(target_modules, str) and target_modules != "all-linear":
        target_modules = [target_modules]
    total = 0
    for name, shape in tensors:
        if not is_linear_weight(name, shape):
            continue
        module = name[: -len(".weight")].rsplit(".", 1)[-1]
        if target_modules == "all-linear" or module in target_modules:
            total += r * (shape[0] + shape[1])
    return total


def generation_weight_bytes(tensors: Iterable[Tensor], dtype: Any, quantization: Quantization = Quantization.none,
                            double_quant: bool = False) -> int:
    """The weights a generation engine holds: every tensor in `dtype` (`none`), or with `nf4` the linear
    weights in NF4 and the rest (embeddings, norms, LM head) in `dtype`, as bitsandbytes loads them
    (`double_quant` off: BitsAndBytesConfig's default, the larger of the two)."""
    if quantization == Quantization.none:
        return weight_bytes(tensors, dtype)
    if quantization == Quantization.nf4:
        return nf4_weight_bytes(tensors, double_quant, rest_dtype=dtype)
    raise ValueError(f"generation.quantization: expected one of {Quantization.values()}, got {quantization!r}")
