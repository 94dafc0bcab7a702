"""Stage 3, distill: answer-only pairs into the instruct checkpoint with TRL's SFTTrainer + LoRA.

With `trainer=lora` the adapter is merged in place into the full-precision base it was trained on.
`trainer.quantize_4bit` (the `qlora` trainer) loads the base in 4-bit NF4 with bitsandbytes; the
adapter is then merged into a *full-precision* reload of the base (`PeftModel` +
`merge_and_unload`): mergekit cannot read a model merged while still 4-bit. That reload is the stage's
peak (7.6 GiB for Qwen3-4B in bf16, more than an 8 GB card holds): `distill.merge_device` (`auto`) runs
it on the CPU, in the same dtype, when the card's free memory cannot hold it. Either way the result
is a plain safetensors checkpoint, in shards of `shard_size` bytes.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from thinkswitch.config import MergeDevice, ModelConfig, TrainerConfig
from thinkswitch.engines.chat import THINK_CLOSE, THINK_OPEN, chat_prompt
from thinkswitch.engines.models import load_model, load_tokenizer, pick_dtype
from thinkswitch.errors import DataError
from thinkswitch.sizing.distill_memory import choose_merge_device
from thinkswitch.stages.inputs import Artifact, Numerics, keyed_as, output_path, outside, stage_key
from thinkswitch.store.io import atomic_path, read_json, read_jsonl, write_json, write_jsonl
from thinkswitch.store.paths import TRAIN_LOG

log = logging.getLogger(__name__)
# The trainer's per-step logs (loss, learning rate, ...): the CLI sends this logger to the log file only.
train_log = logging.getLogger("thinkswitch.train")
# TRL's checkpoints of an unfinished distillation, in the iteration directory; removed once the adapter is saved.
CHECKPOINTS = ".distill_checkpoints"
CHECKPOINTS_KEY = "key.json"  # what the checkpoints were trained from: never resumed with other inputs
# Settings that say when checkpoints are written, not what is trained: outside every key.
CHECKPOINT_SETTINGS = ("save_strategy", "save_steps", "save_total_limit", "save_only_model")

# Callbacks added to every SFTTrainer: a hook for tests (fault injection: a process killed after a checkpoint).
# Empty in real runs.
EXTRA_CALLBACKS: list = []


def training_progress():
    """A TrainerCallback: one progress bar for the steps, the per-step logs to `thinkswitch.train`."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc="distill", unit="step", leave=False)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            train_log.info("step %d: %s", state.global_step, logs)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return Progress()


def checkpoint_timer(minutes: float):
    """A TrainerCallback asking for a checkpoint once `minutes` of training have passed since the last one (or the
    start), never at the last step (the adapter is saved then)."""
    from transformers import TrainerCallback

    class CheckpointTimer(TrainerCallback):
        last = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() - self.last >= minutes * 60 and state.global_step < state.max_steps:
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()

    return CheckpointTimer()


def sft_config(cfg: TrainerConfig, device, dtype, output_dir: Path, seed: int):
    """`trl.SFTConfig` from `trainer.sft`, with the settings this stage owns.

    Checkpoints go to `output_dir`: on TRL's schedule where `trainer.sft` sets `save_strategy` or `save_steps`
    (keeping the last `save_total_limit`, default 1), else by time (`trainer.checkpoint_minutes`,
    `checkpoint_timer`)."""
    import torch
    from trl import SFTConfig

    on_gpu = device.type == "cuda"
    scheduled = "save_strategy" in cfg.sft or "save_steps" in cfg.sft
    defaults: dict[str, Any] = dict(
        bf16=on_gpu and dtype == torch.bfloat16,  # TRL defaults to bf16=True, which fails on CPU
        fp16=on_gpu and dtype == torch.float16,
        use_cpu=not on_gpu,
        save_strategy="steps" if scheduled else "no",  # "no": the checkpoint timer asks for them
        save_total_limit=1,  # a new checkpoint is complete before the one before it is deleted
    )
    owned = dict(output_dir=str(output_dir), report_to=[], seed=seed, data_seed=seed,
                 disable_tqdm=True)  # our own progress bar (training_progress) instead of printed log dicts
    return SFTConfig(**{**defaults, **dict(cfg.sft), **owned})


def trained_settings(cfg: TrainerConfig) -> dict:
    """`trainer` without the settings that only say when checkpoints are written."""
    return {"quantize_4bit": cfg.quantize_4bit, "lora": dict(cfg.lora), "bnb": dict(cfg.bnb),
            "sft": {k: v for k, v in cfg.sft.items() if k not in CHECKPOINT_SETTINGS}}


def last_checkpoint(directory: Path, key: str) -> Optional[Path]:
    """The newest complete TRL checkpoint under `directory` if it was trained from the inputs `key` names; else
    None, after clearing `directory` and recording `key` for the checkpoints to come."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    stamp = directory / CHECKPOINTS_KEY
    try:
        same = read_json(stamp)["key"] == key
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if same:
        steps = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in directory.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                       if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit())
        for _, path in reversed(steps):
            try:  # trainer_state.json is written last (after the adapter, optimizer, scheduler and RNG states)
                read_json(path / "trainer_state.json")
                return path
            except (OSError, ValueError):
                continue
    elif directory.exists():
        log.info("distill: checkpoints in %s were trained from other inputs; not resumed", directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    write_json(stamp, {"key": key})
    return None


def bnb_config(cfg: TrainerConfig, dtype):
    from transformers import BitsAndBytesConfig

    kwargs = dict(load_in_4bit=True, bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(**{**kwargs, **dict(cfg.bnb)})


@dataclass(frozen=True)
class DistillInputs:
    """What the distilled checkpoint depends on (its keys, and the key of TRL checkpoints a killed distillation
    resumes from: `stages.inputs.stage_key`)."""

    instruct: Artifact  # the instruct checkpoint the adapter is trained on
    pairs: Artifact  # the answer-only pairs (strip's output)
    trainer: TrainerConfig = keyed_as(trained_settings, why="trainer.checkpoint_minutes and the sft settings "
                                      "that say when checkpoints are written do not change what is trained")
    model: ModelConfig = outside(why="loads the checkpoint: its dtype is in `numerics`, its revision in the "
                                     "instruct checkpoint's id; sampling and the pair's paths are not read here")
    seed: int  # data order, LoRA init, dropout
    system_prompt: Optional[str]  # rendered into every training prompt
    numerics: Numerics
    shard_size: int = outside(why="how the weights are split into files (shard_size), not what they are; a "
                                  "resume may change it")
    adapter_out: Path = output_path()
    model_out: Path = output_path()
    merge_device: MergeDevice = MergeDevice.auto  # after QLoRA, where the adapter is merged: a CPU merges a bf16
    # base in fp32, a GPU in bf16, so the bytes differ


def train_adapter(inputs: DistillInputs, pairs: list[dict], device) -> tuple[dict, Any, Any]:
    """Fit a LoRA adapter on (prompt, completion) pairs; completion-only loss.

    TRL checkpoints go to `<adapter_out's directory>/.distill_checkpoints/` while it trains (`sft_config`); if one
    from an interrupted run with the same inputs (`stage_key(inputs)`) is there, training resumes from it
    (`trainer.train(resume_from_checkpoint=...)`: adapter, optimizer, scheduler, RNG and data position restored).
    They are deleted once the adapter is saved. Saves the adapter to `adapter_out`; returns the train metrics, the
    trained `PeftModel` and the tokenizer.
    """
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from trl import SFTTrainer

    instruct, cfg, model_cfg, seed = inputs.instruct.path, inputs.trainer, inputs.model, inputs.seed
    tokenizer = load_tokenizer(instruct, model_cfg)
    dataset = Dataset.from_list([{"prompt": chat_prompt(tokenizer, p["prompt"], inputs.system_prompt),
                                  "completion": p["completion"]} for p in pairs])
    dtype = pick_dtype(model_cfg.dtype, device)
    work = inputs.adapter_out.parent / CHECKPOINTS
    resume = last_checkpoint(work, stage_key(inputs))
    args = sft_config(cfg, device, dtype, work, seed)
    quant = bnb_config(cfg, dtype) if cfg.quantize_4bit else None
    model = load_model(instruct, model_cfg, device, quantization_config=quant)
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.activation_checkpointing)
    from transformers import PrinterCallback

    callbacks = [training_progress(), *(make() for make in EXTRA_CALLBACKS)]
    if args.save_strategy == "no" and cfg.checkpoint_minutes > 0:
        callbacks.append(checkpoint_timer(cfg.checkpoint_minutes))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=LoraConfig(**dict(cfg.lora)), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to the terminal
    if resume is not None:
        log.info("distill: resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    with atomic_path(inputs.adapter_out) as tmp:
        trainer.model.save_pretrained(tmp, safe_serialization=True)
        write_jsonl(tmp / TRAIN_LOG, trainer.state.log_history)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "train/pairs": len(pairs),
        "train/steps": result.global_step,
        "train/loss": result.training_loss,
        "train/final_loss": float(losses[-1]) if losses else None,
        "train/seconds": result.metrics.get("train_runtime"),
        "train/quantized_4bit": cfg.quantize_4bit,
        # resumed: the step it resumed from (train/loss and train/seconds then cover the steps after it)
        "train/resumed_from_step": int(resume.name.rsplit("-", 1)[1]) if resume else 0,
    }
    shutil.rmtree(work, ignore_errors=True)
    return metrics, trainer.model, tokenizer


def merge_device_for(setting: str, instruct: str, adapter: Path, model_cfg: ModelConfig, device):
    """Where the adapter is merged (`distill.merge_device`): on a CUDA run with `auto`, the card when the base in
    the run's dtype plus the adapter fit its free memory now (the 4-bit model freed), else the CPU. Logged."""
    import torch

    from thinkswitch.engines.free_memory import free_memory
    from thinkswitch.sizing.weights import checkpoint_tensors, weight_bytes

    need = free = 0
    if device.type == "cuda" and setting == MergeDevice.auto:
        torch.cuda.empty_cache()
        try:
            tensors, _ = checkpoint_tensors(instruct)
        except ValueError:  # a hub id whose config is not at hand: merge where the run is
            log.info("distill: merging the adapter on %s (the base's size is unknown before it loads)", device)
            return device
        need = weight_bytes(tensors, pick_dtype(model_cfg.dtype, device)) + sum(
            f.stat().st_size for f in adapter.glob("*.safetensors"))
        free = free_memory(str(device))
    where, why = choose_merge_device(setting, device_type=device.type, merge_bytes=need, free_bytes=free)
    log.info("distill: merging the adapter on %s (%s)", where, why)
    return device if where == device.type else torch.device(where)


def merge_adapter(instruct: str, adapter: Path, model_cfg: ModelConfig, device, merge_on=None):
    """The base reloaded un-quantized with the adapter merged in (after QLoRA: the 4-bit base cannot be saved
    as a plain checkpoint), on `merge_on` (default: `device`) in the dtype the run uses on `device`."""
    from peft import PeftModel

    merge_on = merge_on or device
    if merge_on != device:  # same dtype as on the card (`auto` would pick float32 on a CPU)
        dtype = str(pick_dtype(model_cfg.dtype, device)).removeprefix("torch.")
        model_cfg = dataclasses.replace(model_cfg, dtype=dtype)
    base = load_model(instruct, model_cfg, merge_on)
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()


def save_checkpoint(model, tokenizer, out: Path, shard_size: int) -> None:
    """A plain safetensors checkpoint (weights in shards of at most `shard_size` bytes) and its tokenizer."""
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size=shard_size)
        tokenizer.save_pretrained(tmp)


def distill(inputs: DistillInputs, *, device) -> dict:
    """The pairs distilled into `instruct` on `device`: the adapter in `adapter_out`, the merged checkpoint in
    `model_out` (safetensors shards of at most `shard_size` bytes); returns `train/*` metrics. After QLoRA the
    merge runs where `inputs.merge_device` (`distill.merge_device`) says (`merge_device_for`)."""
    pairs, trainer, model = inputs.pairs.path, inputs.trainer, inputs.model
    rows = read_jsonl(pairs)
    if not rows:
        raise DataError(f"{pairs}: no answer-only pairs to distill (every generation was dropped)")
    tagged = [i for i, p in enumerate(rows, 1) if THINK_OPEN in p["completion"] or THINK_CLOSE in p["completion"]]
    if tagged:  # an instruct model taught `</think>` starts emitting orphan tags
        raise DataError(f"{pairs}:{tagged[0]}: a target holds a think tag; targets must be answers only")
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # peft reads transformers' deprecated alias on every distillation
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        metrics, trained, tokenizer = train_adapter(inputs, rows, device)
    if trainer.quantize_4bit:
        trained = None  # free the 4-bit model before the full-precision reload
        gc.collect()
        merge_on = merge_device_for(inputs.merge_device, inputs.instruct.path, inputs.adapter_out, model, device)
        merged = merge_adapter(inputs.instruct.path, inputs.adapter_out, model, device, merge_on)
    else:  # the trained model already holds the full-precision base: merge in place, no reload
        merged = trained.merge_and_unload()
    save_checkpoint(merged, tokenizer, inputs.model_out, inputs.shard_size)
    del trained, merged  # both names hold the model; the trainer's reference cycles go with gc.collect
    gc.collect()
    metrics["distill/seconds"] = time.perf_counter() - t0
    log.info("distill: %d pairs, %d steps, loss %.4f, %.1fs", len(rows), metrics["train/steps"],
             metrics["train/loss"], metrics["distill/seconds"])
    return metrics
