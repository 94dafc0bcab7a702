"""Memory plans made before any model loads: what generation and distillation will need, and what fits.

Everything here is arithmetic on a checkpoint's `config.json` (or, for a hub id, a config dict passed
in) and on safetensors *headers*; nothing loads a model. The numbers are estimates:

- **KV cache** (exact for the layouts covered): `layers x KV heads x head_dim x 2 (K and V) x dtype
  bytes` per token, every layer counted as full attention. Sliding-window, linear-attention
  (hybrid) and latent-attention (MLA) layouts are out of scope: sliding and linear layers are
  counted as full ones (an overestimate), MLA is not modelled; `layout_notes` says when a config
  has one of them.
- **Weights**: parameter counts from the safetensors headers of a local checkpoint, or from the
  config of a dense decoder (Llama / Qwen2 / Qwen3 / Mistral layout; mixture-of-experts configs
  need a local checkpoint), times the bytes of the dtype it is loaded in. 4-bit NF4 (QLoRA):
  bitsandbytes' 4 bits per linear weight plus its block scales; embeddings, norms and the LM head
  stay unquantized (cast to fp32 by peft's `prepare_model_for_kbit_training`).
- **Activations** in training: a per-token, per-layer element count of the tensors autograd keeps
  (documented at `activation_elements_per_token`), not measured; allocator fragmentation, CUDA
  context and library workspaces are not modelled, hence the margin.

`plan_generation` returns the largest batch that fits as a KV-token budget (HF backend) or refuses
a run that cannot fit one sequence, with the numbers; `plan_distill` returns an estimate with its
parts, to be logged and turned into a warning when above the free memory.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from thinkswitch.errors import ConfigError

GiB = 2**30

DTYPE_BYTES = {"float64": 8, "float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2,
               "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1, "uint8": 1}
# safetensors' dtype names (header field `dtype`)
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8,
                           "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

NF4_BLOCK = 64  # bitsandbytes' 4-bit block size (Params4bit default)
NF4_DOUBLE_QUANT_BLOCK = 256  # the blocks of absmax scales quantized again (bnb_4bit_use_double_quant)

# The paper's pair, so that a run on hub ids can be planned before anything downloads (values of the
# checkpoints' config.json; both 2507 checkpoints share them).
QWEN3_4B_2507 = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728,
    "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 151936, "tie_word_embeddings": True, "attention_bias": False, "max_position_embeddings": 262144,
    "sliding_window": None, "use_sliding_window": False, "torch_dtype": "bfloat16",
}
KNOWN_CONFIGS = {"Qwen/Qwen3-4B-Instruct-2507": QWEN3_4B_2507, "Qwen/Qwen3-4B-Thinking-2507": QWEN3_4B_2507}

Tensor = tuple[str, tuple[int, ...]]  # (name, shape)


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
    if name != "auto":
        dtype_bytes(name)  # a known name
        return name
    return "bfloat16" if device.startswith("cuda") and bf16_supported else "float32"


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


# ----------------------------------------------------------------------------------------------------------------
# Weights


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


# ----------------------------------------------------------------------------------------------------------------
# Free memory


def meminfo_available(path: Union[str, Path] = "/proc/meminfo") -> int:
    """`MemAvailable` of /proc/meminfo, in bytes: what a process can allocate without swapping."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"{path}: no MemAvailable line")


def free_memory(device: str) -> int:
    """Free bytes on a device now: CUDA's free memory (`torch.cuda.mem_get_info`), or on a CPU the available
    RAM (`MemAvailable`; psutil's `available` where there is no /proc/meminfo). Measure it before the model
    loads (the plans subtract the weights)."""
    if str(device).startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if Path("/proc/meminfo").is_file():
        return meminfo_available()
    import psutil  # not Linux (a dependency of accelerate)

    return int(psutil.virtual_memory().available)


# ----------------------------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True)
class GenerationPlan:
    """What one generation needs and the batch it gets (HF backend: KV cache reserved per batch for the
    longest prompt of the batch plus `max_new_tokens`, for every row)."""

    device: str
    kv_bytes_per_token: int
    weight_bytes: int
    free_bytes: int  # before the weights load
    margin: float  # share of the memory left after the weights held back (activations, fragmentation)
    max_new_tokens: int
    longest_prompt: int
    sequences: int  # prompts x samples per prompt
    batch_size_cap: int  # generation.batch_size: an upper bound
    batch_size: int  # rows of a batch of the longest prompts
    token_budget: int  # KV tokens one batch may hold: rows x (longest prompt + max_new_tokens) <= this
    notes: tuple[str, ...] = ()

    @property
    def available_bytes(self) -> int:
        """Free after the weights, less the margin: what the KV cache may take."""
        return self.token_budget * self.kv_bytes_per_token

    @property
    def sequence_tokens(self) -> int:
        return self.longest_prompt + self.max_new_tokens

    @property
    def sequence_bytes(self) -> int:
        return self.sequence_tokens * self.kv_bytes_per_token

    @property
    def binding(self) -> bool:
        """True when the budget, not `generation.batch_size`, sets the batch."""
        return self.batch_size < min(self.batch_size_cap, max(self.sequences, 1))

    @property
    def batches(self) -> int:
        """Batches at most (every batch as long as the longest prompt)."""
        return math.ceil(self.sequences / self.batch_size) if self.sequences else 0


def plan_generation(*, kv_bytes_per_token: int, prompt_tokens: Sequence[int], max_new_tokens: int,
                    samples_per_prompt: int = 1, free_bytes: int, weight_bytes: int = 0, batch_size: int,
                    device: str = "cpu", margin: float = 0.1, key: str = "model.sampling.thinking.max_new_tokens",
                    notes: Sequence[str] = ()) -> GenerationPlan:
    """The largest batch that fits, as a KV-token budget; `batch_size` is an upper bound.

    `free_bytes` is the device's free memory before the weights load; what is left after `weight_bytes`,
    less `margin` of it, is the KV budget. Raises ConfigError, with the numbers, when the weights or one
    sequence of the longest prompt cannot fit; `key` names the setting to lower.
    """
    if kv_bytes_per_token < 1 or max_new_tokens < 1 or batch_size < 1 or samples_per_prompt < 1:
        raise ValueError("kv_bytes_per_token, max_new_tokens, batch_size and samples_per_prompt must be >= 1")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    longest = max(prompt_tokens, default=0)
    if weight_bytes >= free_bytes:
        raise ConfigError(f"the weights need {fmt_bytes(weight_bytes)}; {fmt_bytes(free_bytes)} free on {device}; "
                          "use a device with more free memory")
    after_weights = free_bytes - weight_bytes
    token_budget = int(after_weights * (1 - margin)) // kv_bytes_per_token
    per_sequence = longest + max_new_tokens
    if per_sequence > token_budget:
        name = key.rsplit(".", 1)[-1]
        raise ConfigError(
            f"{name}={max_new_tokens} needs {fmt_bytes(per_sequence * kv_bytes_per_token)} of KV cache per sequence "
            f"({longest} prompt + {max_new_tokens} new tokens x {fmt_bytes(kv_bytes_per_token)}/token); "
            f"{fmt_bytes(after_weights)} free after weights on {device} ({fmt_bytes(free_bytes)} free, "
            f"{fmt_bytes(weight_bytes)} of weights, {margin:.0%} of the rest held back); lower {key} "
            "or use a device with more free memory")
    sequences = len(prompt_tokens) * samples_per_prompt
    fit = token_budget // per_sequence
    return GenerationPlan(device=device, kv_bytes_per_token=kv_bytes_per_token, weight_bytes=weight_bytes,
                          free_bytes=free_bytes, margin=margin, max_new_tokens=max_new_tokens, longest_prompt=longest,
                          sequences=sequences, batch_size_cap=batch_size,
                          batch_size=min(batch_size, fit, max(sequences, 1)), token_budget=token_budget,
                          notes=tuple(notes))


def plan_generation_for(ref: Union[str, Path], *, dtype: str, device: str, prompt_tokens: Sequence[int],
                        max_new_tokens: int, batch_size: int, samples_per_prompt: int = 1,
                        config: Optional[Mapping] = None, free_bytes: Optional[int] = None, margin: float = 0.1,
                        key: str = "model.sampling.thinking.max_new_tokens") -> GenerationPlan:
    """`plan_generation` for a checkpoint (a local directory, or a hub id with `config`): KV bytes per token
    from its config, weights from its safetensors headers (else its config), free memory measured now
    unless given. `dtype` is the resolved load dtype (`resolve_dtype`)."""
    cfg = load_config(ref, config)
    tensors, _ = checkpoint_tensors(ref, cfg)
    return plan_generation(
        kv_bytes_per_token=kv_bytes_per_token(cfg, dtype), prompt_tokens=prompt_tokens,
        max_new_tokens=max_new_tokens, samples_per_prompt=samples_per_prompt,
        free_bytes=free_memory(device) if free_bytes is None else free_bytes,
        weight_bytes=weight_bytes(tensors, dtype), batch_size=batch_size, device=device, margin=margin, key=key,
        notes=layout_notes(cfg))


# ----------------------------------------------------------------------------------------------------------------
# vLLM (for comparison; paged KV cache allocated as tokens are generated)


def vllm_kv_pool_bytes(total_bytes: int, weight_bytes: int, gpu_memory_utilization: float = 0.9,
                       activation_bytes: int = 2 * GiB) -> int:
    """Roughly what vLLM gives its KV cache: `gpu_memory_utilization` of the card, less the weights and the
    activation peak of its profiling run (`activation_bytes`: an assumption, vLLM measures it), never < 0."""
    return max(int(total_bytes * gpu_memory_utilization) - weight_bytes - activation_bytes, 0)


# ----------------------------------------------------------------------------------------------------------------
# Distillation


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


@dataclass(frozen=True)
class DistillPlan:
    """An estimate of the distill stage's peak memory, by part. Not exact: see the module docstring."""

    device: str
    parts: dict[str, int]  # the training step's memory, by part
    merge_bytes: int  # merging the adapter: QLoRA reloads the base in full precision
    free_bytes: int  # before the base loads
    quantize_4bit: bool
    activation_checkpointing: bool
    tokens: int  # per_device_train_batch_size x max_length
    notes: tuple[str, ...] = field(default=())

    @property
    def train_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def peak_bytes(self) -> int:
        return max(self.train_bytes, self.merge_bytes)

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.free_bytes

    def warning(self) -> Optional[str]:
        """A warning to log when the estimate is above the free memory (None when it fits)."""
        if self.fits:
            return None
        head = (f"distill may not fit on {self.device}: an estimated {fmt_bytes(self.peak_bytes)} "
                f"(estimates are not exact) against {fmt_bytes(self.free_bytes)} free")
        if self.merge_bytes > self.free_bytes and self.merge_bytes >= self.train_bytes:
            return (f"{head}; after QLoRA training the adapter is merged into the base reloaded in full precision "
                    f"({fmt_bytes(self.merge_bytes)}), which no training setting lowers")
        hint = "trainer.sft.activation_checkpointing=true, " if not self.activation_checkpointing else ""
        return (f"{head}; consider {hint}a lower trainer.sft.max_length or per_device_train_batch_size"
                + ("" if self.quantize_4bit else ", or trainer=qlora"))


def plan_distill(config: Mapping, *, dtype: str, quantize_4bit: bool, lora: Mapping, sft: Mapping,
                 free_bytes: int, device: str = "cpu", tensors: Optional[Sequence[Tensor]] = None,
                 bnb: Optional[Mapping] = None, optimizer_state_bytes: int = 8) -> DistillPlan:
    """Estimate the distill stage: base weights (4-bit NF4 or `dtype`) + LoRA weights + their gradients and
    optimizer states (fp32; AdamW: 8 bytes per parameter) + activations at `sft.max_length` x
    `sft.per_device_train_batch_size` (with or without activation checkpointing). `lora`, `sft` and `bnb` are
    `trainer.lora`, `trainer.sft` and `trainer.bnb`; `tensors` (safetensors headers) default to the config's.
    With QLoRA the adapter is merged into a full-precision reload of the base: `merge_bytes`."""
    shape = Shape.from_config(config)
    tensors = list(tensors) if tensors is not None else config_tensors(config)
    r = int(lora.get("r", 8))
    lora_params = lora_param_count(tensors, r, lora.get("target_modules") or "all-linear")
    max_length = int(sft.get("max_length") or 1024)  # TRL's default
    batch = int(sft.get("per_device_train_batch_size", 8))  # transformers' default
    checkpointing = bool(sft.get("activation_checkpointing") or sft.get("gradient_checkpointing"))
    tokens = max_length * batch
    act_bytes = dtype_bytes(dtype)
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
        "activations" + (" (checkpointed)" if checkpointing else ""): activations,
        "LM head": head,
    }
    merge = weight_bytes(tensors, dtype) + lora_params * 4 if quantize_4bit else 0
    return DistillPlan(device=device, parts=parts, merge_bytes=merge, free_bytes=free_bytes,
                       quantize_4bit=quantize_4bit, activation_checkpointing=checkpointing, tokens=tokens,
                       notes=tuple(layout_notes(config)))


# ----------------------------------------------------------------------------------------------------------------


def describe(plan: Union[GenerationPlan, DistillPlan]) -> str:
    """One paragraph for the log."""
    if isinstance(plan, GenerationPlan):
        text = (f"generation memory plan on {plan.device}: {fmt_bytes(plan.free_bytes)} free, weights "
                f"{fmt_bytes(plan.weight_bytes)}, KV cache {fmt_bytes(plan.kv_bytes_per_token)}/token, "
                f"{fmt_bytes(plan.sequence_bytes)} per sequence ({plan.longest_prompt} prompt + "
                f"{plan.max_new_tokens} new tokens); KV budget {plan.token_budget:,} tokens "
                f"({fmt_bytes(plan.available_bytes)}, {plan.margin:.0%} of the rest held back); "
                f"{plan.sequences} sequences in batches of up to {plan.batch_size}"
                + (f" (the memory limit; generation.batch_size={plan.batch_size_cap})" if plan.binding
                   else f" (generation.batch_size={plan.batch_size_cap})")
                + f", at most {plan.batches} batches")
    else:
        parts = ", ".join(f"{name} {fmt_bytes(n)}" for name, n in plan.parts.items())
        text = (f"distill memory estimate on {plan.device} (not exact): training {fmt_bytes(plan.train_bytes)} = "
                f"{parts}, at {plan.tokens:,} tokens per step"
                + (f"; merging the adapter into the full-precision base {fmt_bytes(plan.merge_bytes)}"
                   if plan.merge_bytes else "")
                + f"; peak {fmt_bytes(plan.peak_bytes)} of {fmt_bytes(plan.free_bytes)} free"
                + ("" if plan.fits else " (above the free memory)"))
    return text + (f"; note: {'; '.join(plan.notes)}" if plan.notes else "") + "."
