"""`make gpu-check`: thinkswitch on a GPU machine with no hub access, measured. One JSON line per check.

    python -m benchmarks.gpu_check                          # CUDA, Qwen3-4B body shape (from the repository root)
    python -m benchmarks.gpu_check --device cpu --scale tiny  # the same on a CPU at a tiny shape (the test suite)

Checks, in order (`--only` picks some):

  loop      the experiment on the testbed pair with `trainer=qlora`, 1 iteration (`run_experiment`, in this
            process): wall time and time per stage, CUDA peak, RSS peak, both checkpoints' accuracies
  build     a random-weight pair (seeds 0 and 1) of Qwen3-4B-2507's body: hidden 2560, 36 layers, 32 heads,
            8 KV heads, head_dim 128, intermediate 9728, tied embeddings (3.6B parameters), with the testbed's
            tokenizer (vocabulary ~50), written in bf16 as the project writes checkpoints (`shard_size` shards);
            its generation config holds EOS off (`min_new_tokens`) so every output runs to full length
  distill   `distill.distill` with `experiment=paper_aime`'s trainer (QLoRA NF4, r 16, batch 1 x 4, max_length
            4096, activation checkpointing, 3 epochs) on `--pairs` pairs of ~`--answer-tokens` tokens
  merge     `merge.merge`, the preset's SLERP (t=0.3)
  generate  `generate.generate_labels` through a `Generator` (the HF backend with the run's memory plan),
            `--prompts` prompts, the preset's thinking sampling cut to `--gen-tokens` new tokens
  cb        continuous batching (generation.backend=cb's engine) against static HF batches on ragged lengths
            (`--prompts` prompts, greedy, each output of its own length, log-uniform in [gen_tokens / 8,
            gen_tokens], EOS off; benchmarks/bench_cb.py), in the preset's dtype (bf16 on CUDA) and in NF4
            (`generation.quantization=nf4`): tokens/s of both, the ratio, peaks, greedy outputs that agree
  cpu_merge the adapter merge on the CPU (`distill.merge_device=cpu`: what an 8 GB card does after QLoRA): a
            random LoRA adapter of the preset's shape merged into the instruct checkpoint reloaded on the CPU in the
            run's dtype, and the merged checkpoint written; time and peak RSS
  nf4       generation memory: the thinking checkpoint loaded in bf16 and in NF4 (bitsandbytes, as
            `generation.quantization=nf4`), each generating `--prompts` outputs of up to 256 tokens; CUDA memory
            after the load and at peak, beside the memory plan's weight estimates (CUDA only: skipped on a CPU)
  vllm      the generate check on the vLLM backend, where `.venv-vllm` is installed (else one line: skipped)

Each row: `check`, `seconds`, `cuda_peak_gib` (`torch.cuda.max_memory_allocated`, reset before the check),
`rss_peak_gib` (the process's peak resident memory during the check, where /proc allows resetting it, else since
the start), `tokens_per_s` where tokens are produced or trained on, and the stage's own metrics. Written to `--out`
(default `gpu_check.jsonl`) and, when `$OUT` is set, to `$OUT/gpu_check.jsonl`. The testbed pair must be built
beforehand (`make demo` once; cached under `~/.cache/thinkswitch/testbed`, or `$THINKSWITCH_CACHE`); nothing is
downloaded. Exits 1 if a check failed (the others still run).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.common import GiB, Meter, compose

SHAPES = {
    "4b": dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
               intermediate_size=9728, max_position_embeddings=262144),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 intermediate_size=128, max_position_embeddings=8192),
}
# per scale: new tokens per generated output, distillation pairs and tokens per answer; the loop's overrides
DEFAULTS = {"4b": dict(gen_tokens=1024, pairs=15, answer_tokens=1000, loop=[]),
            "tiny": dict(gen_tokens=16, pairs=4, answer_tokens=40,
                         loop=["domain.train_prompts=8", "domain.eval_size=8", "trainer.sft.num_train_epochs=1"])}
CHECKS = ("loop", "build", "distill", "merge", "generate", "cb", "cpu_merge", "nf4", "vllm")
CHARS = "abcdefghijklmnopqrstuvwxyz"  # in the testbed tokenizer's alphabet: one token per character

log = logging.getLogger("gpu_check")


class Report:
    """JSON lines to the output files (appended and flushed as they come) and the log."""

    def __init__(self, paths: list[Path]):
        self.paths, self.failed = paths, []
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("")

    def __call__(self, row: dict) -> None:
        line = json.dumps(row, default=str)
        for p in self.paths:
            with open(p, "a") as f:
                f.write(line + "\n")
        log.info("%s", line)
        if "error" in row:
            self.failed.append(row["check"])


def words(rng: random.Random, n_chars: int) -> str:
    out, size = [], 0
    while size < n_chars:
        w = "".join(rng.choice(CHARS) for _ in range(rng.randint(2, 8)))
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars]


def environment(device) -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "mergekit", "accelerate", "datasets"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"check": "env", "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda"
            else None, "gpu_total_gib": round(torch.cuda.get_device_properties(device).total_memory / GiB, 1)
            if device.type == "cuda" else None, "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "versions": versions}


def check_loop(args, device, work: Path, report: Report) -> None:
    from thinkswitch.loop import run_experiment

    run_dir = work / "loop"
    overrides = [f"device={device.type}", "trainer=qlora", "iterations=1", "tracking.mode=disabled",
                 "stage_cache=null", *DEFAULTS[args.scale]["loop"], *args.loop_args]
    cfg = compose(overrides, run_dir)
    with Meter(device) as m:
        summary = run_experiment(cfg)
    history = summary["history"]
    gen = history[-1]
    tokens = gen.get("generate/outputs", 0) * gen.get("generate/tokens_per_output", 0)
    report({"check": "loop", "overrides": overrides, **m.stats, "stage_seconds": summary["stage_seconds"],
            "generate_tokens_per_s": round(tokens / gen["generate/seconds"], 1) if gen.get("generate/seconds")
            else None,
            "baseline": {k: v for k, v in summary["baseline"].items() if k.endswith("/accuracy")},
            "final": {k: v for k, v in summary["final"].items() if k.endswith("/accuracy")},
            "train_steps": gen.get("train/steps"), "train_loss": gen.get("train/loss")})


def build_pair(args, device, work: Path, report: Report) -> dict[str, Path]:
    """Random-weight instruct and thinking checkpoints of the scale's shape, written as the project writes them."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from thinkswitch.engines.models import load_tokenizer
    from thinkswitch.setup import resolve_pair
    from thinkswitch.stages.distill import save_checkpoint
    from thinkswitch.store.io import parse_size

    base = compose([], work / "unused")
    testbed = resolve_pair(base.model, Path(base.cache_dir).expanduser())
    shard_size = parse_size(args.shard_size or base.shard_size)
    paths = {}
    for name, seed in (("thinking", 0), ("instruct", 1)):
        with Meter(device) as m:
            tok = load_tokenizer(getattr(testbed, name), base.model)
            tok.model_max_length = SHAPES[args.scale]["max_position_embeddings"]
            config = Qwen3Config(vocab_size=len(tok), **SHAPES[args.scale], tie_word_embeddings=True,
                                 rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0},
                                 rms_norm_eps=1e-6, hidden_act="silu", attention_bias=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
            torch.manual_seed(seed)
            with torch.device(device):
                model = Qwen3ForCausalLM._from_config(config, dtype=torch.bfloat16)
            # random weights: EOS would end outputs at random; every output runs to --gen-tokens instead
            model.generation_config.min_new_tokens = args.gen_tokens
            params = sum(p.numel() for p in model.parameters())
            paths[name] = work / "pair" / name
            save_checkpoint(model, tok, paths[name], shard_size)
            del model
        files = list(paths[name].glob("*.safetensors"))
        report({"check": "build", "model": name, "params": params, "shape": SHAPES[args.scale],
                "vocab": len(tok), "shards": len(files), "gib": round(sum(f.stat().st_size for f in files) / GiB, 3),
                **m.stats})
    return paths


def preset(args, pair: dict[str, Path], work: Path, extra: tuple[str, ...] = ()):
    """`experiment=paper_aime` on the random pair (model=local), its generation cut to --gen-tokens."""
    return compose(["experiment=paper_aime", "domain=testbed", "model=local", f"model.instruct={pair['instruct']}",
                    f"model.thinking={pair['thinking']}", f"device={args.device}",
                    f"model.sampling.thinking.max_new_tokens={args.gen_tokens}",
                    f"model.sampling.instruct.max_new_tokens={args.gen_tokens}",
                    *([f"shard_size={args.shard_size}"] if args.shard_size else []), *extra], work / "run")


def check_distill(args, device, cfg, pair, work: Path, report: Report) -> None:
    from thinkswitch.stages import distill
    from thinkswitch.stages.inputs import Artifact, Numerics
    from thinkswitch.store.io import parse_size, write_jsonl

    rng = random.Random(1)
    pairs = work / "pairs.jsonl"
    write_jsonl(pairs, [{"id": f"q{i}", "sample": 0, "prompt": words(rng, 60) + "\nwhat is the sum?",
                         "completion": words(rng, args.answer_tokens)} for i in range(args.pairs)])
    out = work / "distilled"
    with Meter(device) as m:
        metrics = distill.distill(distill.DistillInputs(
            instruct=Artifact.at(pair["instruct"]), pairs=Artifact.at(pairs), trainer=cfg.trainer, model=cfg.model,
            seed=11, system_prompt=None, numerics=Numerics.of(cfg, device), shard_size=parse_size(cfg.shard_size),
            adapter_out=out / "adapter", model_out=out / "instruct"), device=device)
    epochs = cfg.trainer.sft.get("num_train_epochs", 1)
    tokens = args.pairs * (args.answer_tokens + 80) * epochs  # answer + prompt and chat template, per epoch
    report({"check": "distill", "trainer": cfg.trainer.name, "sft": dict(cfg.trainer.sft),
            "lora": dict(cfg.trainer.lora), "pairs": args.pairs, "answer_tokens": args.answer_tokens, **m.stats,
            "tokens_per_s": round(tokens / m.seconds, 1),  # trained tokens, estimated: the whole stage's time
            "stage_metrics": metrics})
    shutil.rmtree(out, ignore_errors=True)


def check_merge(args, device, cfg, pair, work: Path, report: Report) -> None:
    from thinkswitch.stages import merge
    from thinkswitch.stages.inputs import Artifact
    from thinkswitch.store.io import parse_size

    out = work / "merged"
    with Meter(device) as m:
        metrics = merge.merge(merge.MergeInputs(thinking=Artifact.at(pair["thinking"]),
                                                instruct=Artifact.at(pair["instruct"]), cfg=cfg.merge,
                                                shard_size=parse_size(cfg.shard_size), out=out))
    report({"check": "merge", "method": cfg.merge.method, "t": cfg.merge.t, **m.stats, "stage_metrics": metrics,
            "gib": round(sum(f.stat().st_size for f in out.glob("*.safetensors")) / GiB, 3)})
    shutil.rmtree(out, ignore_errors=True)


def check_generate(args, device, cfg, pair, work: Path, report: Report, name: str = "generate") -> None:
    from thinkswitch.engines.base import Generator
    from thinkswitch.engines.models import ModelPair
    from thinkswitch.sizing.run_plan import plan_memory
    from thinkswitch.stages.generate import GenerateInputs, generate_labels
    from thinkswitch.stages.inputs import Artifact, Engine
    from thinkswitch.store.io import read_jsonl

    rng = random.Random(2)
    examples = [{"id": f"p{i}", "prompt": words(rng, 100 + 15 * i) + "\nwhat is the sum?"} for i in range(args.prompts)]
    budget = plan_memory(cfg, ModelPair(str(pair["instruct"]), str(pair["thinking"])), examples, examples, device)
    generator = Generator(model=cfg.model, generation=cfg.generation, device=device, token_budget=budget)
    out = work / "generations.jsonl"
    sampling = cfg.model.sampling.thinking
    with Meter(device) as m:
        metrics = generate_labels(GenerateInputs(
            checkpoint=Artifact.at(pair["thinking"]), examples=tuple(examples), sampling=sampling, samples=1,
            system_prompt=None, seed=0, engine=Engine.of(cfg, device), out=out), generator=generator)
    rows = read_jsonl(out)
    tokens = sum(r["tokens"] for r in rows)
    prompt_tokens = sum(len(tok_ids) for tok_ids in _prompt_ids(pair, cfg, examples)) / len(examples)
    report({"check": name, "backend": generator.generation.backend,  # as it ran: auto resolved (hf, cb, vllm)
            "configured_backend": cfg.generation.backend, "batch_size": cfg.generation.batch_size,
            "prompt_tokens": round(prompt_tokens, 1),
            "token_budget": budget, "prompts": len(rows), "sampling": dataclasses.asdict(sampling),
            "tokens": tokens, "full_length": sum(r["tokens"] == args.gen_tokens for r in rows), **m.stats,
            "tokens_per_s": round(tokens / m.seconds, 1), "stage_metrics": metrics})


def _prompt_ids(pair, cfg, examples) -> list[list[int]]:
    """The examples' chat-formatted prompts as the engines encode them (prompt tokens, for `--calibrate`)."""
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.models import load_tokenizer

    tok = load_tokenizer(str(pair["thinking"]), cfg.model)
    return tok([chat_prompt(tok, ex["prompt"]) for ex in examples], add_special_tokens=False)["input_ids"]


def check_cb(args, device, cfg, pair, work: Path, report: Report) -> None:
    """Continuous batching vs static HF batches on ragged lengths, in the run's dtype and in NF4 (one row each)."""
    from benchmarks.bench_cb import STATIC_BATCH, ragged_cb, ragged_lengths, ragged_static, static_steps
    from thinkswitch.engines.models import generation_quantization, load_model, load_tokenizer, pick_dtype

    rng = random.Random(3)
    tok = load_tokenizer(str(pair["thinking"]), cfg.model)
    prompts = [words(rng, 100 + 15 * i) + "\nwhat is the sum?" for i in range(args.prompts)]
    lengths = ragged_lengths(args.prompts, max(2, args.gen_tokens // 8), args.gen_tokens)
    dtype = pick_dtype(cfg.model.dtype, device)
    for quantization in ("none", "nf4"):
        quant = generation_quantization(quantization, dtype)
        with Meter(device) as static_m:
            model = load_model(str(pair["thinking"]), cfg.model, device, quant)
            static, static_s = ragged_static(model, tok, prompts, lengths, STATIC_BATCH)
            del model
        with Meter(device) as cb_m:
            model = load_model(str(pair["thinking"]), cfg.model, device, quant, attn_implementation="sdpa")
            cb, cb_s = ragged_cb(model, tok, prompts, lengths)
            del model
        tokens = sum(lengths)
        report({"check": "cb", "dtype": str(dtype).removeprefix("torch."), "quantization": quantization,
                "prompts": len(prompts), "lengths": lengths, "tokens": tokens, "longest": max(lengths),
                "static_batch": STATIC_BATCH, "static_steps": static_steps(lengths, prompts, STATIC_BATCH),
                "prompt_tokens": round(sum(len(x) for x in tok(prompts)["input_ids"]) / len(prompts), 1),
                "static_tokens_per_s": round(tokens / static_s, 1), "cb_tokens_per_s": round(tokens / cb_s, 1),
                "cb_over_static": round(static_s / cb_s, 3), "full_length": sum(len(r) == n for r, n in
                                                                                 zip(cb, lengths)),
                "greedy_equal": sum(a == b for a, b in zip(cb, static)),
                "static": static_m.stats, "cb": cb_m.stats, "seconds": round(static_m.seconds + cb_m.seconds, 2)})


def random_adapter(cfg, pair, out: Path) -> Path:
    """A LoRA adapter of the preset's settings on the instruct checkpoint, with random A and B (a merge that
    changes every adapted weight), saved as training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(pair["instruct"], dtype=torch.bfloat16)
    torch.manual_seed(3)
    model = get_peft_model(base, LoraConfig(**{**dict(cfg.trainer.lora), "init_lora_weights": False}))
    model.save_pretrained(out)
    del model, base
    return out


def check_cpu_merge(args, device, cfg, pair, work: Path, report: Report) -> None:
    import torch

    from thinkswitch.engines.models import load_tokenizer, pick_dtype
    from thinkswitch.stages.distill import merge_adapter, save_checkpoint
    from thinkswitch.store.io import parse_size

    adapter = random_adapter(cfg, pair, work / "adapter")
    out = work / "merged"
    with Meter(device) as m:
        merged = merge_adapter(str(pair["instruct"]), adapter, cfg.model, device, torch.device("cpu"))
        save_checkpoint(merged, load_tokenizer(str(pair["instruct"]), cfg.model), out, parse_size(cfg.shard_size))
        params = sum(p.numel() for p in merged.parameters())
        del merged
    report({"check": "cpu_merge", "merge_device": "cpu", "dtype": str(pick_dtype(cfg.model.dtype, device)),
            "params": params, "lora": dict(cfg.trainer.lora), **m.stats,
            "written_bytes": sum(f.stat().st_size for f in out.glob("*.safetensors"))})
    shutil.rmtree(work, ignore_errors=True)


def check_nf4(args, device, cfg, pair, work: Path, report: Report) -> None:
    """CUDA memory of the thinking checkpoint generating in bf16 and in NF4, beside the plan's weight estimates."""
    if device.type != "cuda":
        report({"check": "nf4", "skipped": "CUDA memory only: not on a CPU"})
        return
    import torch
    from transformers import BitsAndBytesConfig

    from thinkswitch.engines.models import load_model, load_tokenizer
    from thinkswitch.sizing.weights import checkpoint_tensors, generation_weight_bytes

    path = str(pair["thinking"])
    tok = load_tokenizer(path, cfg.model)
    rng = random.Random(4)
    batch = tok([words(rng, 200) for _ in range(args.prompts)], return_tensors="pt", padding=True).to(device)
    tensors, _ = checkpoint_tensors(path)
    for quantization in ("none", "nf4"):
        quant = None if quantization == "none" else BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        with Meter(device) as m:
            model = load_model(path, cfg.model, device, quantization_config=quant)
            weights = torch.cuda.memory_allocated(device)
            model.generate(**batch, max_new_tokens=min(args.gen_tokens, 256), min_new_tokens=min(args.gen_tokens, 256),
                           do_sample=False)
        report({"check": "nf4", "quantization": quantization, "weights_gib": round(weights / GiB, 3),
                "plan_weights_gib": round(generation_weight_bytes(tensors, "bfloat16", quantization) / GiB, 3),
                "prompts": args.prompts, "new_tokens": min(args.gen_tokens, 256), **m.stats})
        del model
        gc.collect()
        torch.cuda.empty_cache()


def check_vllm(args, device, cfg, pair, work: Path, report: Report) -> None:
    from thinkswitch.engines.vllm_options import vllm_venv

    if not (vllm_venv() / "bin" / "python").exists():
        report({"check": "vllm", "skipped": "not installed", "venv": str(vllm_venv())})
        return
    check_generate(args, device, preset(args, pair, work, ("generation.backend=vllm",)), pair, work, report,
                   name="vllm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cpu or auto")
    p.add_argument("--scale", choices=sorted(SHAPES), default="4b")
    p.add_argument("--only", default=",".join(CHECKS), help=f"comma list of {', '.join(CHECKS)}")
    p.add_argument("--out", type=Path, default=Path("gpu_check.jsonl"))
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one, removed)")
    p.add_argument("--pairs", type=int, default=None, help="distillation pairs (4b: the paper's 15)")
    p.add_argument("--answer-tokens", type=int, default=None)
    p.add_argument("--prompts", type=int, default=15, help="prompts to generate for (the paper's 15)")
    p.add_argument("--gen-tokens", type=int, default=None, help="new tokens per output")
    p.add_argument("--shard-size", default=None, help="shard size of the checkpoints written (default: shard_size)")
    p.add_argument("--loop-args", nargs="*", default=[], help="more overrides for the loop check")
    args = p.parse_args(argv)
    args.pairs = args.pairs or DEFAULTS[args.scale]["pairs"]
    args.answer_tokens = args.answer_tokens or DEFAULTS[args.scale]["answer_tokens"]
    args.gen_tokens = args.gen_tokens or DEFAULTS[args.scale]["gen_tokens"]
    unknown = set(args.only.split(",")) - set(CHECKS)
    if unknown:
        p.error(f"--only: unknown checks {sorted(unknown)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")  # no hub: everything is local
    os.environ.setdefault("WANDB_MODE", "disabled")
    from thinkswitch.engines.gpus import cuda_count
    from thinkswitch.engines.models import pick_device
    from thinkswitch.loop import frozen_library_heap

    if args.device != "cpu" and not cuda_count():  # one line, before anything is spent
        import torch

        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build: {torch.version.cuda}); on a GPU "
              "machine see the README's CUDA install (make install-cuda), or run --device cpu --scale tiny",
              file=sys.stderr)
        return 2
    device = pick_device(args.device)
    outs = [args.out] + ([Path(os.environ["OUT"]) / "gpu_check.jsonl"] if os.environ.get("OUT") else [])
    report = Report(outs)
    try:
        report({**environment(device), "scale": args.scale, "args": vars(args)})
    except Exception as e:  # noqa: BLE001 - recorded; the checks after it still run
        report({"check": "env", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})
    only = args.only.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def attempt(name, fn, *fn_args):
        try:
            return fn(*fn_args)
        except Exception as e:  # noqa: BLE001 - one failing check must not stop the others
            report({"check": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})
            return None

    try:
        if "loop" in only:
            attempt("loop", check_loop, args, device, work, report)
        if {"build", "distill", "merge", "generate", "cb", "cpu_merge", "nf4", "vllm"} & set(only):
            pair = attempt("build", build_pair, args, device, work, report)
            if pair is not None:
                cfg = preset(args, pair, work)
                with frozen_library_heap(cfg):  # as run_experiment does around a run
                    for name, fn in (("distill", check_distill), ("merge", check_merge),
                                     ("generate", check_generate), ("cb", check_cb), ("cpu_merge", check_cpu_merge),
                                     ("nf4", check_nf4), ("vllm", check_vllm)):
                        if name in only:
                            attempt(name, fn, args, device, cfg, pair, work / name, report)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report({"check": "done", "seconds": round(time.perf_counter() - t0, 1), "failed": report.failed})
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
