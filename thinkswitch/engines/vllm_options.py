"""`generation.vllm.*`: vLLM's engine options checked and completed in the main process, without importing vLLM.

`check_vllm_options` validates them against the EngineArgs field list `make install-vllm` saved
(`.venv-vllm/engine_args.json`), `check_context` checks `max_model_len` against the run's prompts at setup,
and `engine_args` adds what thinkswitch sets itself (the checkpoint, its revision, the dtype).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

from thinkswitch.engines.vllm_worker import _json_kind  # the worker's own type names (stdlib-only module)
from thinkswitch.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]  # thinkswitch/engines/ -> the repository root
# keys thinkswitch sets itself (from model.*): an entry in generation.vllm would contradict them
RESERVED = {"model": "model.instruct/model.thinking", "tokenizer": "the checkpoint",
            "revision": "model.revision", "tokenizer_revision": "model.revision",
            "trust_remote_code": "model.trust_remote_code"}
CPU_KV_CACHE_DEFAULT = 2 * 1024**3  # vLLM's CPU default reserves gpu_memory_utilization of all RAM


def vllm_venv() -> Path:
    """`.venv-vllm` at the repository root, or `$THINKSWITCH_VLLM_VENV`."""
    return Path(os.environ.get("THINKSWITCH_VLLM_VENV") or REPO_ROOT / ".venv-vllm")


def _missing_venv() -> str:
    return (f"generation.backend=vllm: vLLM is not installed ({vllm_venv()}/bin/python not found); run "
            f"`make install-vllm` in {REPO_ROOT} (GPU: `make install-vllm VLLM=vllm==<version> VLLM_TORCH=`)")


def installed_platform() -> Optional[str]:
    """The platform the installed vLLM build selects (`cuda`, `cpu`), as `make install-vllm` recorded it in
    `engine_args.json`; None where nothing is installed or the record predates it (an install to redo)."""
    spec = vllm_venv() / "engine_args.json"
    try:
        platform = json.loads(spec.read_text()).get("platform")
    except (OSError, ValueError, AttributeError):
        return None
    return platform if isinstance(platform, str) else None


def nf4_error() -> str:
    """vLLM and `generation.quantization=nf4`: refused on every device (vLLM 0.32 has no bitsandbytes method:
    `ModelConfig` raises "Unknown quantization method"), naming the methods the installed build has."""
    try:
        methods = json.loads((vllm_venv() / "engine_args.json").read_text()).get("quantizations") or []
    except (OSError, ValueError, AttributeError):
        methods = []
    if "bitsandbytes" in methods:
        return ""
    has = f" (its methods: {', '.join(methods[:6])}, ...: pre-quantized checkpoints)" if methods else ""
    return ("generation.quantization=nf4: the installed vLLM has no bitsandbytes 4-bit quantization" + has
            + "; use generation.backend=cb or hf for NF4 generation, or generation.quantization=none")


def engine_fields() -> dict[str, list[str]]:
    """EngineArgs field -> the JSON kinds it accepts, as `make install-vllm` recorded them."""
    venv = vllm_venv()
    if not (venv / "bin" / "python").exists():
        raise ConfigError(_missing_venv())
    spec = venv / "engine_args.json"
    if not spec.is_file():
        raise ConfigError(f"generation.backend=vllm: {spec} is missing (an interrupted install?); run "
                          f"`make install-vllm` in {REPO_ROOT}")
    return json.loads(spec.read_text())["fields"]


def check_vllm_options(options: dict) -> list[str]:
    """Errors in `generation.vllm` (each naming `generation.vllm.<key>`), or [] when it can work.

    Runs in the main process without importing vLLM: unknown keys (with the closest field names),
    keys thinkswitch sets itself, and values of a type the EngineArgs field does not take.
    Raises ConfigError when vLLM is not installed at all.
    """
    fields = engine_fields()
    errors = []
    for key, value in options.items():
        name = f"generation.vllm.{key}"
        if key in RESERVED:
            errors.append(f"{name}: set by thinkswitch from {RESERVED[key]}; remove it")
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            errors.append(f"{name}: not an option of vLLM's EngineArgs{hint}")
            continue
        kinds, kind = fields[key], _json_kind(value)
        if key == "kv_cache_memory_bytes" and kind == "str":  # a size: "2GB" (thinkswitch.store.io.parse_size)
            from thinkswitch.store.io import parse_size

            try:
                parse_size(value)
            except ValueError as e:
                errors.append(f"{name}: {e}")
            continue
        if value is None or "any" in kinds or kind in kinds or (kind == "int" and "float" in kinds):
            continue
        errors.append(f"{name}: expected {' or '.join(kinds)}, got {value!r}")
    return errors


def _model_context(config: Mapping) -> Optional[int]:
    """The context length vLLM takes when `max_model_len` is unset, where it is plainly the config's
    `max_position_embeddings` (None when RoPE scaling stretches it: vLLM's own arithmetic then decides)."""
    for key in ("rope_scaling", "rope_parameters"):
        rope = config.get(key)
        if isinstance(rope, dict) and rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
            return None
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def check_context(options: Mapping, config: Mapping, jobs: Sequence[tuple[str, str, int, int]]) -> list[str]:
    """`generation.vllm.max_model_len` (unset: the model's context) against the generations of the run, before any
    engine starts: each (what, its max_new_tokens key, longest chat-formatted prompt in tokens, max_new_tokens)
    needs prompt + max_new_tokens positions (vLLM refuses a longer prompt and cuts an answer at the limit)."""
    limit, own = options.get("max_model_len"), True
    if limit is None:
        limit, own = _model_context(config), False
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:  # -1: vLLM fits it to memory
        return []
    what, key, prompt, new = max(jobs, key=lambda job: job[2] + job[3], default=("", "", 0, 0))
    if prompt + new <= limit:
        return []
    need = f"{what}'s longest prompt ({prompt} tokens) + {key} ({new}) = {prompt + new} tokens"
    if own:
        return [f"generation.vllm.max_model_len={limit} is shorter than {need}; set it >= {prompt + new}"]
    return [f"the model's context ({limit} tokens: generation.vllm.max_model_len is unset) is shorter than {need}; "
            f"lower {key}"]


def startup_memory_error(free: int, total: int, utilization: float, held: int = 0) -> str:
    """vLLM 0.32's start-up rule (`v1/worker/utils.request_memory`): the engine refuses to start when the free
    memory is below ceil(total x gpu_memory_utilization). '' when it starts; else the numbers and what would."""
    need = math.ceil(total * utilization)
    if free >= need:
        return ""
    gib = 2**30
    fits = math.floor((free / total - 0.005) * 100) / 100
    here = f", {held / gib:.1f} GiB of it held by this process (its CUDA context and tensors)" if held else ""
    return (f"generation.vllm.gpu_memory_utilization={utilization}: vLLM needs {need / gib:.1f} GiB free on the card "
            f"to start ({utilization} x {total / gib:.1f} GiB); {free / gib:.1f} GiB is free{here}; set "
            f"generation.vllm.gpu_memory_utilization<={fits} or free the card")


def context_for(jobs: Sequence[tuple[str, str, int, int]]) -> int:
    """The context vLLM needs for these generations (each: what, key, longest prompt, max_new_tokens): the longest
    prompt + its budget, what `max_model_len` is set to when unset (vLLM would take the model's context, 262,144
    tokens for Qwen3-4B-2507: KV for one such sequence at start, 36 GiB, more than a 24 GB card holds)."""
    return max((prompt + new for _, _, prompt, new in jobs), default=1)


def engine_args(options: dict, path: str, model_cfg, device) -> dict:
    """EngineArgs for one checkpoint: `generation.vllm` (None values dropped) and what thinkswitch sets."""
    from thinkswitch.engines.models import pick_dtype
    from thinkswitch.store.io import parse_size

    args = {k: v for k, v in options.items() if v is not None}
    args.update(model=str(path), revision=model_cfg.revision, trust_remote_code=bool(model_cfg.trust_remote_code))
    if "dtype" not in args:  # the same dtype as the HF backend (`model.dtype`; float32 on CPU)
        args["dtype"] = str(pick_dtype(model_cfg.dtype, device)).removeprefix("torch.")
    if isinstance(args.get("kv_cache_memory_bytes"), str):
        args["kv_cache_memory_bytes"] = parse_size(args["kv_cache_memory_bytes"])
    if device.type == "cpu":
        if "kv_cache_memory_bytes" not in args and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            args["kv_cache_memory_bytes"] = CPU_KV_CACHE_DEFAULT
        # vLLM 0.32 on CPU fails on seeded requests whose prompt is prefilled in chunks ("CPU
        # Generator does not use offset": it rewinds the generator, which only CUDA's can do)
        args.setdefault("enable_chunked_prefill", False)
    return args
