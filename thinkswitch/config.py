"""Typed schema of an experiment, registered in Hydra's ConfigStore.

Every config group (`model`, `domain`, `generation`, `trainer`, `merge`, `evaluate`, `tracking`)
has a dataclass here. Hydra validates the composed YAML against them, so a misspelled key or a
wrong type fails at composition, before any model loads. Options that belong to a library
(`trl.SFTConfig`, `peft.LoraConfig`, bitsandbytes, mergekit) are passed through as dictionaries
and validated by the library itself in :func:`thinkswitch.validate.check_config`.

Each key has one default: here, or (for interpolations such as `run_dir`, and for the choices a
group option makes, such as the testbed's sampling) in the YAML under `conf/`, never both.
`cli.py` turns the composed config into these dataclasses once (`OmegaConf.to_object`): the rest
of the package sees plain typed objects. Keys with a fixed set of values are `Choice` enums, so Hydra
rejects any other value at composition. (Over 300 lines, one job: the schema and its documentation.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import MISSING


class Choice(str, Enum):
    """A key with a fixed set of values. Hydra rejects any other value at composition, naming the allowed
    ones. Members are strings equal to their names (`cfg.keep_checkpoints == "all"`, f-strings, dict
    keys and JSON all see the plain value), and `as_plain` turns them into `str` for YAML and W&B."""

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def values(cls) -> list[str]:
        """The allowed values, in order: to check a value that did not come through Hydra (an environment
        variable, a config built in Python) and to name them in its error."""
        return [member.value for member in cls]


class Role(Choice):
    """The two checkpoints of a pair (model.instruct, model.thinking), in the one order every table and loop uses."""

    instruct = "instruct"
    thinking = "thinking"


class Dtype(Choice):
    auto = "auto"  # bfloat16 on a GPU that has it, else float32
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Source(Choice):
    testbed = "testbed"  # the testbed's synthetic task
    data = "data"  # records from files or a dataset (domain.train / domain.eval)


class Backend(Choice):
    hf = "hf"
    vllm = "vllm"
    cb = "cb"
    auto = "auto"


class MergeDevice(Choice):
    auto = "auto"  # on the card when the plan says it fits, else the CPU
    cpu = "cpu"
    cuda = "cuda"


class Quantization(Choice):
    none = "none"
    nf4 = "nf4"


class MergeBase(Choice):
    current = "current"  # compound over iterations
    initial = "initial"  # always from the starting thinking checkpoint


class Labels(Choice):
    thinking = "thinking"  # the thinking model's stripped answers
    gold = "gold"  # the same, only those matching the dataset's gold answer (the gold_oracle baseline)


class Filter(Choice):
    none = "none"  # every answer that stopped after a closed trace
    parsable = "parsable"  # those whose answer the grader can read a prediction from (no gold answer needed)
    majority = "majority"  # those agreeing with their prompt's majority prediction (parsable by construction)


class Target(Choice):
    raw = "raw"
    canonical = "canonical"


class TrackingMode(Choice):
    online = "online"
    offline = "offline"
    disabled = "disabled"


class KeepCheckpoints(Choice):
    all = "all"
    last = "last"
    none = "none"


# `yaml.safe_dump` writes a Choice as its plain string too (a config dict made with dataclasses.asdict).
yaml.SafeDumper.add_multi_representer(Choice, lambda dumper, value: dumper.represent_str(value.value))


def as_plain(obj: Any) -> Any:
    """A config dataclass as a dict of plain values (`Choice` members as `str`): for YAML, JSON and W&B."""
    def plain(value: Any) -> Any:
        return value.value if isinstance(value, Enum) else value

    return dataclasses.asdict(obj, dict_factory=lambda items: {k: plain(v) for k, v in items})


@dataclass
class TestbedSpec:
    """The built-in testbed pair's build settings: everything that affects its weights (hashed into
    its cache directory's name; see thinkswitch/testbed/build.py)."""

    __test__ = False  # not a pytest test class despite the name

    seed: int = 0
    min_digits: int = 6
    max_digits: int = 10
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 256
    batch_size: int = 64
    lr: float = 3e-3               # base phase peak learning rate
    finetune_lr: float = 3e-4      # thinking / instruct phases: low enough that the pair stays SLERP-able
    weight_decay: float = 0.01
    warmup_steps: int = 20
    base_steps: int = 400
    thinking_steps: int = 150
    instruct_steps: int = 100
    base_traced_frac: float = 0.8  # share of base examples in the thinking (traced) format
    instruct_pool_size: int = 1000  # fixed pool of direct-answer problems for the instruct phase


@dataclass
class SamplingConfig:
    """Keyword arguments of `model.generate` for one mode (thinking or instruct)."""

    do_sample: bool = False
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    max_new_tokens: int = 256


@dataclass
class SamplingPair:
    """Per-mode generation settings; defaults follow each model card's recommendation."""

    thinking: SamplingConfig = field(default_factory=SamplingConfig)
    instruct: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class ModelConfig:
    """An instruct/thinking pair of one architecture.

    `instruct` and `thinking` are hub ids or local directories. When `testbed` is set, the pair
    is the project's built-in tiny testbed, built locally from that spec (and cached), and the
    two paths are ignored.
    """

    name: str = MISSING
    instruct: Optional[str] = None
    thinking: Optional[str] = None
    revision: Optional[str] = None
    dtype: Dtype = Dtype.auto
    trust_remote_code: bool = False
    testbed: Optional[TestbedSpec] = None
    sampling: SamplingPair = field(default_factory=SamplingPair)


@dataclass
class SourceConfig:
    """Records of one split: local files or a Hugging Face dataset, with a field mapping.

    `fields` maps our names (`id`, `answer`, and whatever `domain.prompt_template` uses) to the
    records' field names (dotted names reach into nested records). `include_ids` / `exclude_ids`
    name a JSON file whose keys (or items) are record ids to keep / drop, e.g. an official split.
    `gold_regex` reads the gold answer out of a longer `answer` text (a worked solution): a regular
    expression with one group; the group of its last match is the gold, e.g. `####\\s*(-?\\d+)`.
    """

    files: List[str] = field(default_factory=list)  # .jsonl/.json/.csv/.parquet, concatenated
    dataset: Optional[str] = None  # HF dataset id (or a `save_to_disk` directory)
    config: Optional[str] = None
    split: str = "train"
    revision: Optional[str] = None
    fields: Dict[str, str] = field(default_factory=dict)
    include_ids: Optional[str] = None
    exclude_ids: Optional[str] = None
    gold_regex: Optional[str] = None


@dataclass
class DomainConfig:
    """Where the task prompts come from, how they are shown to the model, how answers are graded.

    `source: testbed` draws from the testbed's task; `source: data` reads `train` and `eval`.
    `prompt_template` is a Python format string over the mapped fields (lists are joined by
    blank lines). Training answers are never used as labels.
    """

    name: str = MISSING
    source: Source = MISSING
    grader: str = MISSING  # a name in thinkswitch.data.grading.GRADERS
    train: SourceConfig = field(default_factory=SourceConfig)
    eval: SourceConfig = field(default_factory=SourceConfig)
    prompt_template: str = "{prompt}"
    train_prompts: int = 15
    eval_size: int = 30
    seed: int = 0  # draws the prompts and questions; the run's `seed` does not (per run: domain.seed='${seed}')
    system_prompt: Optional[str] = None


@dataclass
class GenerationConfig:
    """Batched generation: label generation by the thinking model, and evaluation.

    Sampling settings per mode belong to the model (`model.sampling.thinking` / `.instruct`).
    """

    backend: Backend = Backend.hf  # auto: cb or vllm on CUDA, hf on CPU (engines.base.resolve_backend)
    batch_size: int = 64  # prompts per batch (HF backend)
    samples_per_prompt: int = 1  # k thinking samples per training prompt
    quantization: Quantization = Quantization.none  # generation weights: none | nf4 (4-bit, bitsandbytes)
    vllm: Dict[str, Any] = MISSING  # backend=vllm: vLLM's EngineArgs (defaults in conf/generation/default.yaml)


@dataclass
class TrainerConfig:
    """Distillation with TRL's SFTTrainer and a peft LoRA adapter.

    `sft` is passed to `trl.SFTConfig`, `lora` to `peft.LoraConfig`, `bnb` to
    `transformers.BitsAndBytesConfig` (only when `quantize_4bit`).

    `checkpoint_minutes`: TRL checkpoints (adapter, optimizer, scheduler, RNG) are written to the iteration
    directory after this many minutes of training since the last one, so that a killed distillation resumes
    from there (0: none). `sft.save_strategy` / `sft.save_steps`, when given, are TRL's own schedule instead.
    """

    name: str = MISSING
    quantize_4bit: bool = False
    checkpoint_minutes: float = 10.0
    sft: Dict[str, Any] = field(default_factory=dict)
    lora: Dict[str, Any] = field(default_factory=dict)
    bnb: Dict[str, Any] = field(default_factory=dict)


@dataclass
class MergeConfig:
    """The new thinking checkpoint: mergekit SLERP from thinking (t=0) to instruct (t=1).

    `t` is a number in [0, 1] or mergekit's gradient/filter form, e.g.
    `[{filter: self_attn, value: [0, 0.5, 1]}, {value: 0.3}]`.
    """

    method: str = "slerp"  # a mergekit merge method
    t: Any = 0.1
    base: MergeBase = MergeBase.current
    dtype: Optional[str] = None  # merged dtype; None keeps the checkpoints' dtype
    options: Dict[str, Any] = field(default_factory=dict)  # extra mergekit MergeOptions


@dataclass
class MethodConfig:
    """Which parts of ThinkSwitch run: the whole method, or a baseline (one config away).

    merge_only: no distillation, the thinking model is SLERP'd toward the starting instruct one;
    distill_only: no merge, the thinking model never changes; gold_oracle: distil only the thinking
    model's answers that match the dataset's gold answer (the method's labels, in its format, made correct).
    """

    name: str = MISSING
    distill: bool = True
    merge: bool = True
    labels: Labels = Labels.thinking


@dataclass
class DistillConfig:
    """Which stripped answers become training pairs, and in what form.

    Only outputs that stopped by themselves after a closed trace are candidates (`stages.strip`).
    filter: `parsable` (default) keeps those whose answer the domain's grader reads a prediction from
    (an answer in the domain's format; no gold answer is read); `none` keeps every one; `majority`
    keeps, per prompt, the samples whose extracted answer is the majority among the prompt's k samples
    (`generation.samples_per_prompt`) and drops prompts without a strict majority, or whose majority
    share is below `min_agreement`.
    target: `raw` trains on the stripped answer as the thinking model wrote it; `canonical` on the
    domain's canonical answer format (`\\boxed{N}`, `yes`/`no`/`maybe`).
    merge_device: after QLoRA, where the adapter is merged into the base reloaded in full precision.
    """

    filter: Filter = Filter.parsable
    min_agreement: float = 0.0  # with majority: the majority share a prompt needs, in [0, 1]
    target: Target = Target.raw
    # where QLoRA's adapter is merged into the base reloaded in full precision: auto (on the card when it fits,
    # else the CPU; thinkswitch.sizing.distill_memory.choose_merge_device) | cpu | cuda
    merge_device: MergeDevice = MergeDevice.auto


@dataclass
class EvaluateConfig:
    """Evaluation of both checkpoints on the domain's evaluation set.

    `samples` > 1 answers every question that many times: accuracy is then avg@n, and
    `maj_accuracy` is maj@n (the majority answer graded); the accuracy's 95% interval is then a
    bootstrap over the questions (one sample each: Wilson's). `conf/evaluate/avg4.yaml` sets 4.
    """

    samples: int = 1
    samples_table: int = 8  # rows per model in W&B's table of sample generations


@dataclass
class CostConfig:
    """Turns wall time into dollars: `gpu_hour_usd` is the price of the machine per hour."""

    gpu_hour_usd: Optional[float] = None


@dataclass
class TrackingConfig:
    """Weights & Biases. `mode` is online, offline or disabled; unset (null), the tracker uses `$WANDB_MODE`
    when it is set, else offline (`thinkswitch.analysis.tracking.tracking_mode`)."""

    mode: Optional[TrackingMode] = None
    project: str = "thinkswitch"
    entity: Optional[str] = None
    group: Optional[str] = None
    name: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    init_timeout: float = 30.0


@dataclass
class ExperimentConfig:
    """One ThinkSwitch experiment: `iterations` rounds of generate, strip, distill, merge, evaluate."""

    model: ModelConfig = MISSING
    domain: DomainConfig = MISSING
    generation: GenerationConfig = MISSING
    trainer: TrainerConfig = MISSING
    merge: MergeConfig = MISSING
    evaluate: EvaluateConfig = MISSING
    tracking: TrackingConfig = MISSING
    method: MethodConfig = MISSING
    distill: DistillConfig = field(default_factory=DistillConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    iterations: int = 2
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_threads: Optional[int] = None  # torch CPU threads; None leaves torch's default
    run_dir: str = MISSING
    cache_dir: str = MISSING
    data_dir: str = MISSING
    stage_cache: Optional[str] = MISSING  # directory of reusable stage outputs (sweeps share work); null: off
    keep_checkpoints: KeepCheckpoints = KeepCheckpoints.all  # none: only metrics, eval results and adapters stay
    shard_size: str = "1GB"  # safetensors shard size of the checkpoints a run writes (distilled and merged)


GROUPS = {
    "model": ModelConfig,
    "domain": DomainConfig,
    "generation": GenerationConfig,
    "trainer": TrainerConfig,
    "merge": MergeConfig,
    "evaluate": EvaluateConfig,
    "tracking": TrackingConfig,
    "method": MethodConfig,
}
