"""Resolving and loading checkpoints: hub ids or local directories, safetensors only."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from thinkswitch.config import Dtype, ModelConfig, Quantization
from thinkswitch.errors import ConfigError

log = logging.getLogger(__name__)

INDEX = "model.safetensors.index.json"
# config.json keys two checkpoints must share to be merged tensor by tensor (head_dim: see _config_value)
SHAPE_KEYS = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "intermediate_size",
              "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings",
              "num_experts", "num_experts_per_tok", "moe_intermediate_size")
_SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit on the JSON header
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass(frozen=True)
class ModelPair:
    instruct: str
    thinking: str


def is_local(ref: str) -> bool:
    """A local directory (rather than a hub id like `Qwen/Qwen3-4B-Instruct-2507`)."""
    return ref.startswith(("/", ".", "~")) or Path(ref).expanduser().exists()


def check_model_dir(ref: str, key: str) -> dict[str, tuple[int, ...]]:
    """A local checkpoint must have config.json, safetensors weights and a tokenizer; every weight
    file must be whole (its header read and checked against its size), and an index must name
    only shards that exist and hold the tensors it maps to them. Returns every tensor's shape."""
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}: {path} is not a directory")
    missing = [what for what, ok in (
        ("config.json", (path / "config.json").is_file()),
        ("*.safetensors weights", any(path.glob("*.safetensors"))),
        ("a tokenizer (tokenizer.json or tokenizer_config.json)",
         (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()),
    ) if not ok]
    if missing:
        raise ConfigError(f"{key}: {path} is missing {', '.join(missing)}")
    tables = {f.name: safetensors_header(f, key) for f in sorted(path.glob("*.safetensors"))}
    weights = list(tables)  # the files the model loads from: all of them, or the index's shards
    index = path / INDEX
    if index.is_file():
        weight_map = _read_json(index, key).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ConfigError(f"{key}: {index}: no `weight_map` object (a corrupt index)")
        for tensor, shard in weight_map.items():
            if shard not in tables:
                raise ConfigError(f"{key}: {index} maps {tensor!r} to {shard}, which is missing from {path}")
            if tensor not in tables[shard]:
                raise ConfigError(f"{key}: {index} maps {tensor!r} to {shard}, which has no such tensor")
        weights = sorted(set(weight_map.values()))
    return {name: shape for f in weights for name, (_, shape) in tables[f].items()}


def safetensors_header(path: Path, key: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor: (dtype, shape)} of a safetensors file, read from its header alone (8 bytes of length,
    then JSON), with every tensor's offsets checked against its shape and the file's size: a
    truncated or corrupt file is a ConfigError naming it, at the cost of a few KB read."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        n = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 2 <= n <= min(_SAFETENSORS_MAX_HEADER, size - 8):
            raise ConfigError(f"{key}: {path}: not a safetensors file, or truncated ({size} bytes; "
                              f"its header length field says {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ConfigError(f"{key}: {path}: corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{key}: {path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    data, end_max, table = size - 8 - n, 0, {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            ok = 0 <= begin <= end and all(isinstance(d, int) and d >= 0 for d in shape)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"{key}: {path}: corrupt safetensors header at tensor {name!r}")
        if dtype in _DTYPE_BYTES and end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise ConfigError(f"{key}: {path}: corrupt safetensors header: tensor {name!r} ({dtype} {list(shape)}) "
                              f"spans {end - begin} bytes, its shape needs {math.prod(shape) * _DTYPE_BYTES[dtype]}")
        end_max = max(end_max, end)
        table[name] = (dtype, shape)
    if end_max != data:
        raise ConfigError(f"{key}: {path}: {'truncated' if end_max > data else 'corrupt'}: its header describes "
                          f"{end_max} bytes of tensors, the file holds {data}")
    return table


def _read_json(path: Path, key: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{key}: {path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: {path}: expected a JSON object")
    return data


def _config_value(config: dict, k: str) -> Any:
    """A config.json value; a missing head_dim is hidden_size / num_attention_heads (as transformers has it)."""
    if k == "head_dim" and config.get(k) is None and config.get("hidden_size") and config.get("num_attention_heads"):
        return config["hidden_size"] // config["num_attention_heads"]
    return config.get(k)


def check_pair(pair: ModelPair) -> None:
    """Local pairs: both checkpoints complete and whole, of one architecture and shape, with the
    same tensors (mergekit merges them name by name)."""
    refs = {"model.instruct": pair.instruct, "model.thinking": pair.thinking}
    if not all(is_local(r) for r in refs.values()):
        return  # hub ids are checked when they download
    shapes = {key: check_model_dir(ref, key) for key, ref in refs.items()}
    configs = {key: _read_json(Path(ref).expanduser() / "config.json", key) for key, ref in refs.items()}
    warn_auto_map({key: (refs[key], config) for key, config in configs.items()})
    a, b = configs["model.instruct"], configs["model.thinking"]
    diffs = [f"{k}: {_config_value(a, k)} vs {_config_value(b, k)}"
             for k in SHAPE_KEYS if _config_value(a, k) != _config_value(b, k)]
    if diffs:
        raise ConfigError("model.instruct and model.thinking differ in architecture (they must share one to be "
                          "merged): " + "; ".join(diffs))
    a, b = shapes["model.instruct"], shapes["model.thinking"]
    diffs = [f"{t}: {list(a[t]) if t in a else 'absent'} vs {list(b[t]) if t in b else 'absent'}"
             for t in sorted(a.keys() | b.keys()) if a.get(t) != b.get(t)]
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise ConfigError("model.instruct and model.thinking hold different tensors (they must match to be "
                          f"merged): {'; '.join(diffs[:3])}{more}")


def warn_auto_map(configs: dict[str, tuple[str, dict]]) -> None:
    """One warning when the pair's config.json names custom code (`auto_map`): the checkpoints the run
    writes (distilled, merged) inherit that config.json, but not the .py files it points to."""
    named = [f"{ref}/config.json ({key})" for key, (ref, config) in configs.items() if config.get("auto_map")]
    if named:
        log.warning("%s: auto_map names custom code; the checkpoints this run writes keep auto_map but not "
                    "the .py files, so load them with trust_remote_code=false (the architecture's own class) "
                    "or copy those files next to them", ", ".join(named))


def check_device(name: str) -> list[str]:
    """Errors for `device`: a known name, and a CUDA device only where one exists (counted without starting CUDA
    in this process: `engines.gpus.cuda_count`)."""
    import torch

    from thinkswitch.engines.gpus import cuda_count

    if name in ("auto", "cpu"):
        return []
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        return [f"device: expected auto, cpu, cuda or cuda:N, got {name!r}"]
    count = cuda_count()
    if not count:
        return [f"device: {name} asked for, but torch sees no CUDA device here (torch {torch.__version__}); "
                "use device=cpu or device=auto"]
    index = int(name[5:]) if ":" in name else 0
    if index >= count:
        return [f"device: {name} asked for, but there are {count} CUDA device(s)"]
    return []


def check_dtype(name: str) -> list[str]:
    if name not in Dtype.values():  # what a checkpoint is loaded, trained and merged in
        return [f"model.dtype: expected one of {Dtype.values()}, got {name!r}"]
    return []


def pick_device(name: str):
    """The torch device `device` names; `auto`: CUDA where a GPU is there (asked without starting CUDA here)."""
    import torch

    from thinkswitch.engines.gpus import cuda_count

    if name == "auto":
        return torch.device("cuda" if cuda_count() else "cpu")
    return torch.device(name)


def pick_dtype(name: str, device) -> Any:
    """`auto`: bf16 on a GPU that supports it, else float32 (CPU kernels are fastest in fp32)."""
    import torch

    if name == Dtype.auto:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in Dtype.values():
        raise ConfigError(f"model.dtype: expected one of {Dtype.values()}, got {name!r}")
    return getattr(torch, str(name))


def load_tokenizer(path: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def generation_quantization(name: str, dtype) -> Optional[Any]:
    """`generation.quantization`: None for `none`; for `nf4` the bitsandbytes 4-bit NF4 config generation loads
    the checkpoint with (linear layers in NF4, computing in the run's `dtype`; embeddings and LM head unquantized)."""
    if name == Quantization.none:
        return None
    if name != Quantization.nf4:
        raise ConfigError(f"generation.quantization: expected one of {Quantization.values()}, got {name!r}")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def load_model(path: str, cfg: ModelConfig, device, quantization_config: Optional[Any] = None,
               attn_implementation: Optional[str] = None):
    """A causal LM in eval mode on `device` (4-bit when `quantization_config` is given; `attn_implementation`:
    transformers' own, e.g. `paged|sdpa` for continuous batching; None: its default)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(
        revision=cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=True,
        dtype=pick_dtype(cfg.dtype, device),
    )
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quantization_config is None:
        model.to(device)
    return model.eval()
