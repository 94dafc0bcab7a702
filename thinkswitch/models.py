"""Resolving and loading checkpoints: hub ids or local directories, safetensors only."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from thinkswitch.config import ModelConfig
from thinkswitch.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPair:
    instruct: str
    thinking: str


def is_local(ref: str) -> bool:
    """A local directory (rather than a hub id like `Qwen/Qwen3-4B-Instruct-2507`)."""
    return ref.startswith(("/", ".", "~")) or Path(ref).expanduser().exists()


def check_model_dir(ref: str, key: str) -> None:
    """A local checkpoint must have config.json, safetensors weights and a tokenizer."""
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


def check_pair(pair: ModelPair) -> None:
    """Local pairs: both checkpoints complete, and of one architecture and shape (mergekit needs it)."""
    refs = {"model.instruct": pair.instruct, "model.thinking": pair.thinking}
    if not all(is_local(r) for r in refs.values()):
        return  # hub ids are checked when they download
    for key, ref in refs.items():
        check_model_dir(ref, key)
    configs = {key: json.loads((Path(ref).expanduser() / "config.json").read_text()) for key, ref in refs.items()}
    shape_keys = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "intermediate_size",
                  "num_attention_heads", "num_key_value_heads", "vocab_size")
    diffs = [f"{k}: {configs['model.instruct'].get(k)} vs {configs['model.thinking'].get(k)}"
             for k in shape_keys if configs["model.instruct"].get(k) != configs["model.thinking"].get(k)]
    if diffs:
        raise ConfigError("model.instruct and model.thinking differ in architecture (they must share one to be "
                         "merged): " + "; ".join(diffs))


DTYPES = ("auto", "float32", "bfloat16", "float16")  # what a checkpoint is loaded, trained and merged in


def check_device(name: str) -> list[str]:
    """Errors for `device`: a known name, and a CUDA device only where one exists."""
    import torch

    if name in ("auto", "cpu"):
        return []
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        return [f"device: expected auto, cpu, cuda or cuda:N, got {name!r}"]
    if not torch.cuda.is_available():
        return [f"device: {name} asked for, but torch sees no CUDA device here (torch {torch.__version__}); "
                "use device=cpu or device=auto"]
    index = int(name[5:]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        return [f"device: {name} asked for, but there are {torch.cuda.device_count()} CUDA device(s)"]
    return []


def check_dtype(name: str) -> list[str]:
    if name not in DTYPES:
        return [f"model.dtype: expected one of {list(DTYPES)}, got {name!r}"]
    return []


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(name: str, device) -> Any:
    """`auto`: bf16 on a GPU that supports it, else float32 (CPU kernels are fastest in fp32)."""
    import torch

    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ConfigError(f"model.dtype: expected one of {list(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def load_tokenizer(path: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, cfg: ModelConfig, device, quantization_config: Optional[Any] = None):
    """A causal LM in eval mode on `device` (4-bit when `quantization_config` is given)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(
        revision=cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=True,
        dtype=pick_dtype(cfg.dtype, device),
    )
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quantization_config is None:
        model.to(device)
    return model.eval()
