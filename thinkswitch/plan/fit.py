"""One card, one config: whether the run fits (the run's own memory plans) and its hours per stage (the
time model of `thinkswitch.sizing.timing`); `fit` finds the overrides that make a run fit a card."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from thinkswitch.config import ExperimentConfig, MergeDevice, Quantization
from thinkswitch.errors import ConfigError
from thinkswitch.plan.slots import slots_for
from thinkswitch.sizing.cards import Card
from thinkswitch.sizing.distill_memory import plan_distill
from thinkswitch.sizing.run_plan import PLAN_ORDER, Job, distills, jobs_for
from thinkswitch.sizing.shapes import Shape, fmt_bytes, kv_bytes_per_token, load_config, resolve_dtype
from thinkswitch.sizing.timing import (
    Assumptions,
    continuous_decode,
    kv_passes,
    static_decode,
    training_seconds,
)
from thinkswitch.sizing.weights import checkpoint_tensors, param_count, weight_bytes
from thinkswitch.store.io import parse_size

ENGINES = {"hf": "static", "cb": "continuous", "auto": "continuous", "vllm": "vllm"}  # generation.backend
ENGINE_NAMES = {"static": "HF generate, static batches", "continuous": "continuous batching (paged KV)",
                "vllm": "vLLM"}
HOURS = ("generate", "distill", "merge", "evaluate")


@dataclass(frozen=True)
class Model:
    """What the plan knows of the pair before anything loads."""

    ref: str
    source: str
    config: dict
    tensors: list
    dtype: str


@dataclass
class CardPlan:
    card: Card
    overrides: tuple[str, ...] = ()
    why: list[str] = field(default_factory=list)  # empty: fits
    engine: str = ""
    precision: str = ""
    batching: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    other_engine: Optional[tuple[str, float]] = None  # the other batching mode's run seconds, for comparison
    iterations: int = 0
    usd_per_hour: Optional[float] = None

    @property
    def fits(self) -> bool:
        return not self.why

    def hours(self, name: str) -> float:
        return self.seconds.get(name, 0.0) / 3600

    @property
    def iteration_hours(self) -> float:
        return sum(self.hours(n) for n in HOURS)

    @property
    def run_hours(self) -> float:  # iteration 0's evaluation, then the iterations
        return self.hours("evaluate") + self.iterations * self.iteration_hours

    @property
    def usd(self) -> Optional[float]:
        return None if self.usd_per_hour is None else self.run_hours * self.usd_per_hour


def load_model_shape(cfg: ExperimentConfig) -> Model:
    """The thinking checkpoint's config and tensors: a local directory's config.json and safetensors headers, a
    known hub id's built-in config, or the shipped testbed pair."""
    ref = cfg.model.thinking
    if cfg.model.testbed is not None:
        ref = str(Path(__file__).resolve().parents[1] / "testbed" / "pair" / "thinking")
    try:
        config = load_config(ref)
        tensors, source = checkpoint_tensors(ref, config)
    except ValueError as e:
        raise ConfigError(f"model.thinking: {e} (thinkswitch-plan knows the paper's pair by hub id, any local "
                          "checkpoint by its config.json)") from None
    return Model(ref, source, config, tensors, resolve_dtype(cfg.model.dtype, "cuda"))


def generation_jobs(cfg: ExperimentConfig, a: Assumptions) -> list[Job]:
    """The run's generations (`run_plan.jobs_for`, the run's own list), every prompt `a.prompt_tokens` long."""
    return jobs_for(cfg, [a.prompt_tokens] * cfg.domain.train_prompts, [a.prompt_tokens] * cfg.domain.eval_size)


def decode_seconds(job: Job, engine: str, slots: int, model: Model, card: Card, a: Assumptions) -> float:
    kw = dict(sequences=job.sequences, prompt=job.longest_prompt, max_new=job.max_new,
              weight_read=weight_bytes(model.tensors, model.dtype),  # NF4 read at bf16 size (sizing.timing)
              kv_per_token=kv_bytes_per_token(model.config, model.dtype), bandwidth=card.bandwidth,
              efficiency=a.efficiency, overhead=a.overhead(engine))
    shape = Shape.from_config(model.config)  # cb: K/V copied out of the pages and widened to every query head
    passes = kv_passes(engine, shape.heads // shape.kv_heads, min(slots, job.sequences))
    if engine == "static":
        return static_decode(rows=slots, kv_passes=passes, **kw).seconds
    return continuous_decode(slots=slots, kv_passes=passes, **kw).seconds


def plan_card(cfg: ExperimentConfig, model: Model, card: Card, a: Assumptions, usd: Optional[float],
              overrides: tuple[str, ...] = ()) -> CardPlan:
    """One card, one config: what fits (or why not) and the hours per stage."""
    engine = ENGINES.get(cfg.generation.backend)
    if engine is None:
        raise ConfigError(f"generation.backend: unknown backend {cfg.generation.backend!r}; known: {list(ENGINES)}")
    plan = CardPlan(card, overrides, engine=f"{cfg.generation.backend}: {ENGINE_NAMES[engine]}",
                    iterations=cfg.iterations, usd_per_hour=usd if usd is not None else card.usd_per_hour)
    if engine == "vllm" and cfg.generation.quantization == "nf4":  # vLLM 0.32 has no bitsandbytes: never priced
        plan.why.append("generation.quantization=nf4: vLLM has no bitsandbytes 4-bit quantization (vLLM 0.32); "
                        "use generation.backend=cb for NF4 generation")
        return plan
    jobs = generation_jobs(cfg, a)
    slots = {}
    for job in jobs:
        try:
            slots[job] = slots_for(job, engine, cfg, model, card, jobs)
        except ConfigError as e:
            plan.why.append(f"{job.stage} {job.role}: {e}")
    distill = None
    if distills(cfg):  # as the run plans it: iterations=0 distils nothing
        distill = plan_distill(model.config, dtype=model.dtype, quantize_4bit=cfg.trainer.quantize_4bit,
                               lora=cfg.trainer.lora, sft=cfg.trainer.sft, bnb=cfg.trainer.bnb,
                               free_bytes=card.free_bytes, device="cuda", tensors=model.tensors,
                               merge_device=cfg.distill.merge_device, shard_bytes=parse_size(cfg.shard_size))
        if not distill.fits:
            plan.why.append(distill.warning())
    plan.precision = precision(cfg, model, distill)
    plan.batching = ", ".join(f"{j.stage} {j.role} {slots[j]}" for j in jobs if j in slots)
    if plan.fits:
        plan.seconds = stage_seconds(cfg, model, card, a, engine, slots, jobs)
        other = "continuous" if engine == "static" else "static"
        other_slots = {}
        try:
            other_slots = {j: slots_for(j, other, cfg, model, card, jobs) for j in jobs}
        except ConfigError:
            pass
        if other_slots:
            seconds = stage_seconds(cfg, model, card, a, other, other_slots, jobs)
            plan.other_engine = (other, seconds["evaluate"] + cfg.iterations * sum(seconds.values()))
    return plan


def precision(cfg: ExperimentConfig, model: Model, distill) -> str:
    short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
    text = f"generation {'nf4' if cfg.generation.quantization == 'nf4' else short.get(model.dtype, model.dtype)}"
    if distill is not None:
        text += ", distill " + ("QLoRA (NF4 base)" if cfg.trainer.quantize_4bit else "LoRA (bf16 base)")
        if distill.merge_bytes:
            text += f", adapter merge on {'the card' if distill.merge_on_card else distill.merge_device}"
            if distill.host_bytes:
                text += f" (~{fmt_bytes(distill.host_bytes)} of host RAM)"
    return text


def stage_seconds(cfg: ExperimentConfig, model: Model, card: Card, a: Assumptions, engine: str, slots: dict,
                  jobs: list[Job]) -> dict[str, float]:
    ckpt = weight_bytes(model.tensors, model.dtype)  # a checkpoint on disk (bf16)
    load = ckpt / a.disk_bandwidth
    out = {name: 0.0 for name in HOURS}
    for job in jobs:
        out[job.stage] += decode_seconds(job, engine, slots[job], model, card, a) + load
    if cfg.method.distill:
        sft = cfg.trainer.sft
        tokens = (cfg.domain.train_prompts * cfg.generation.samples_per_prompt * (a.prompt_tokens + a.answer_tokens)
                  * float(sft.get("num_train_epochs", 3)))
        checkpointing = bool(sft.get("activation_checkpointing") or sft.get("gradient_checkpointing"))
        out["distill"] = (training_seconds(tokens=int(tokens), params=param_count(model.tensors),
                                           flops=card.bf16_flops, mfu=a.mfu, checkpointing=checkpointing)
                          + load + (2 if cfg.trainer.quantize_4bit else 1) * ckpt / a.disk_bandwidth)
    if cfg.method.merge:
        out["merge"] = 3 * ckpt / a.disk_bandwidth  # mergekit reads two checkpoints and writes one
    return out


def fit(cfg: ExperimentConfig, model: Model, card: Card, a: Assumptions, usd: Optional[float]) -> list[CardPlan]:
    """The plan as configured and, when it does not fit, with the first overrides that make it fit: NF4
    generation, then the adapter merge on the CPU, then the longest `max_new_tokens` (multiples of 1,024)."""
    first = plan_card(cfg, model, card, a, usd)
    if first.fits:
        return [first]
    steps: list[tuple[str, ExperimentConfig]] = []
    if cfg.generation.quantization != Quantization.nf4 and ENGINES.get(cfg.generation.backend) != "vllm":
        cfg = replace(cfg, generation=replace(cfg.generation, quantization=Quantization.nf4))
        steps.append(("generation.quantization=nf4", cfg))
    if cfg.distill.merge_device == MergeDevice.cuda:
        cfg = replace(cfg, distill=replace(cfg.distill, merge_device=MergeDevice.cpu))
        steps.append(("distill.merge_device=cpu", cfg))
    overrides: tuple[str, ...] = ()
    for override, candidate in steps:
        overrides += (override,)
        plan = plan_card(candidate, model, card, a, usd, overrides)
        if plan.fits:
            return [first, plan]
    return [first, shorter_traces(cfg, model, card, a, usd, overrides)]


def shorter_traces(cfg: ExperimentConfig, model: Model, card: Card, a: Assumptions, usd: Optional[float],
                   overrides: tuple[str, ...]) -> CardPlan:
    """The longest `max_new_tokens` per mode (a multiple of 1,024) with which its generations fit, or the refusal
    at 1,024 tokens."""
    for role in PLAN_ORDER:
        plan = plan_card(cfg, model, card, a, usd, overrides)
        if role_fits(plan, role):
            continue
        for tokens in range((getattr(cfg.model.sampling, role).max_new_tokens - 1) // 1024 * 1024, 0, -1024):
            trial = with_max_new_tokens(cfg, role, tokens)
            override = f"model.sampling.{role}.max_new_tokens={tokens}"
            plan = plan_card(trial, model, card, a, usd, overrides + (override,))
            if role_fits(plan, role):
                cfg, overrides = trial, plan.overrides
                break
        else:
            return plan
    return plan_card(cfg, model, card, a, usd, overrides)


def role_fits(plan: CardPlan, role: str) -> bool:
    return not any(why.startswith((f"generate {role}:", f"evaluate {role}:")) for why in plan.why)


def with_max_new_tokens(cfg: ExperimentConfig, role: str, tokens: int) -> ExperimentConfig:
    sampling = cfg.model.sampling
    sampling = replace(sampling, **{role: replace(getattr(sampling, role), max_new_tokens=tokens)})
    return replace(cfg, model=replace(cfg.model, sampling=sampling))
