"""A decoder's shape before anything loads: dtype sizes, a checkpoint's config, its KV cache per token.

Arithmetic on a checkpoint's `config.json` (or, for the paper's hub ids, the copy in `KNOWN_CONFIGS`);
nothing here imports torch or loads a model. The KV cache per token is exact for the layouts covered:
`layers x KV heads x head_dim x 2 (K and V) x dtype bytes`, every layer counted as full attention.
Sliding-window, linear-attention (hybrid) and latent-attention (MLA) layouts are out of scope: sliding
and linear layers are counted as full ones (an overestimate), MLA is not modelled; `layout_notes` says
when a config has one of them. The tensors and weight bytes are in `thinkswitch.sizing.weights`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from thinkswitch.config import Dtype

GiB = 2**30

DTYPE_BYTES = {"float64": 8, "float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2,
               "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1, "uint8": 1}

# The paper's pair, so that a run on hub ids can be planned before anything downloads (values of the
# checkpoints' config.json; both 2507 checkpoints share them).
QWEN3_4B_2507 = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728,
    "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 151936, "tie_word_embeddings": True, "attention_bias": False, "max_position_embeddings": 262144,
    "sliding_window": None, "use_sliding_window": False, "torch_dtype": "bfloat16",
}
KNOWN_CONFIGS = {"Qwen/Qwen3-4B-Instruct-2507": QWEN3_4B_2507, "Qwen/Qwen3-4B-Thinking-2507": QWEN3_4B_2507}


# ----------------------------------------------------------------------------------------------------------------
# Sizes and units


def dtype_bytes(dtype: Any) -> int:
    """Bytes per element of a dtype given by name (`bfloat16`, `torch.float32`) or as a torch dtype."""
    name = str(dtype).removeprefix("torch.")
    try:
        return DTYPE_BYTES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(DTYPE_BYTES)}") from None


def resolve_dtype(name: str, device: str, bf16_supported: bool = True) -> str:
    """The dtype a model is loaded in, as `thinkswitch.engines.models.pick_dtype` picks it (`auto`: bfloat16 on a GPU
    that supports it, else float32), without importing torch."""
    if name != Dtype.auto:
        dtype_bytes(name)  # a known name
        return str(name)
    return Dtype.bfloat16.value if device.startswith("cuda") and bf16_supported else Dtype.float32.value


def fmt_bytes(n: float) -> str:
    """`4.5 GiB`, `144.0 KiB`: binary units, one decimal."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# ----------------------------------------------------------------------------------------------------------------
# Model configs


def load_config(ref: Union[str, Path], config: Optional[Mapping] = None) -> dict:
    """A checkpoint's config: `config` when given, else `<ref>/config.json` of a local directory, else the
    built-in copy for the paper's hub ids (`KNOWN_CONFIGS`)."""
    if config is not None:
        return dict(config)
    path = Path(ref).expanduser()
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    if str(ref) in KNOWN_CONFIGS:
        return dict(KNOWN_CONFIGS[str(ref)])
    raise ValueError(f"{ref}: no config.json there; for a hub id pass its config dict")


def text_config(config: Mapping) -> Mapping:
    """The language model's config (a multimodal config nests it under `text_config`)."""
    return config.get("text_config") or config


@dataclass(frozen=True)
class Shape:
    """What the estimates need from a decoder's config."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    model_type: str = ""
    attention_bias: bool = False

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @classmethod
    def from_config(cls, config: Mapping) -> "Shape":
        c = text_config(config)
        try:
            heads = int(c["num_attention_heads"])
            hidden = int(c["hidden_size"])
            return cls(
                layers=int(c["num_hidden_layers"]), hidden=hidden, heads=heads,
                kv_heads=int(c.get("num_key_value_heads") or heads),  # absent: multi-head attention
                head_dim=int(c.get("head_dim") or hidden // heads),  # absent (or null): hidden / heads
                intermediate=int(c.get("intermediate_size") or 4 * hidden), vocab=int(c["vocab_size"]),
                tied=bool(c.get("tie_word_embeddings", False)), model_type=str(c.get("model_type", "")),
                attention_bias=bool(c.get("attention_bias", False)),
            )
        except KeyError as e:
            raise ValueError(f"model config has no {e.args[0]!r}: not a decoder config this estimate covers") from None


_MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def is_moe(config: Mapping) -> bool:
    c = text_config(config)
    return any((c.get(k) or 0) > 1 for k in _MOE_KEYS)


def layout_notes(config: Mapping) -> list[str]:
    """Layouts the KV estimate does not model (it counts every layer as full attention)."""
    c = text_config(config)
    notes = []
    types = set(c.get("layer_types") or [])
    if c.get("use_sliding_window") or (c.get("sliding_window") and c.get("use_sliding_window") is None) \
            or "sliding_attention" in types:
        notes.append("sliding-window layers counted as full attention (KV overestimated)")
    if types - {"full_attention", "sliding_attention"}:
        notes.append(f"layer types {sorted(types - {'full_attention', 'sliding_attention'})} counted as full "
                     "attention (KV overestimated)")
    if c.get("kv_lora_rank"):
        notes.append("latent attention (MLA) not modelled: the KV estimate may be wrong")
    if is_moe(config):
        notes.append("mixture of experts: weights need a local checkpoint (safetensors headers)")
    return notes


def kv_bytes_per_token(config: Mapping, dtype: Any) -> int:
    """KV-cache bytes one token takes: layers x KV heads x head_dim x 2 (K and V) x dtype bytes."""
    s = Shape.from_config(config)
    return s.layers * s.kv_heads * s.head_dim * 2 * dtype_bytes(dtype)
