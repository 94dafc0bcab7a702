"""Resolving and loading checkpoints: hub ids or local directories, safetensors only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from thinkswitch.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPair:
    instruct: str
    thinking: str


def resolve_pair(cfg: ModelConfig, cache_dir: Path) -> ModelPair:
    """The starting pair: the built-in testbed (built once, cached) or the configured paths/ids."""
    if cfg.testbed is not None:
        from thinkswitch.testbed import build_testbed, TestbedSpec

        root = build_testbed(TestbedSpec(**dict(cfg.testbed)), Path(cache_dir) / "testbed")
        return ModelPair(str(root / "instruct"), str(root / "thinking"))
    if not cfg.instruct or not cfg.thinking:
        raise ValueError("model.instruct and model.thinking must both be set (a hub id or a local directory)")
    return ModelPair(cfg.instruct, cfg.thinking)


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
    try:
        return getattr(torch, name)
    except AttributeError:
        raise ValueError(f"model.dtype: unknown dtype {name!r}") from None


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
