"""`make gpu-check`'s measured rows: a random-weight pair of Qwen3-4B's body shape and the project's stages on it,
then the paper preset itself at a tiny scale (`gpu_check.py` lists them and runs them in order).

    loop      the experiment on the testbed pair with `trainer=qlora`, 1 iteration (`run_experiment`, in this
              process): wall time and time per stage, CUDA peak, RSS peak, both checkpoints' accuracies
    build     a random-weight pair (seeds 0 and 1) of Qwen3-4B-2507's body: hidden 2560, 36 layers, 32 heads, 8 KV
              heads, head_dim 128, intermediate 9728, tied embeddings (3.6B parameters), with the testbed's tokenizer
              (vocabulary ~50), written in bf16 as the project writes checkpoints (`shard_size` shards); its
              generation config holds EOS off (`min_new_tokens`, honoured by every engine) so outputs run to full
              length
    distill   `distill.distill` with `experiment=paper_aime`'s trainer (QLoRA NF4, r 16, batch 1 x 4, max_length
              4096, activation checkpointing, 3 epochs) on `--pairs` pairs of ~`--answer-tokens` tokens
    merge     `merge.merge`, the preset's SLERP (t=0.3)
    generate  `generate.generate_labels` through a `Generator` (the run's backend, `auto` resolved and recorded, with
              the run's memory plan), `--prompts` prompts, the preset's thinking sampling cut to `--gen-tokens`
    cb        continuous batching against static HF batches on ragged lengths (`--prompts` prompts, greedy, each
              output of its own length, log-uniform in [gen_tokens / 8, gen_tokens], EOS off; benchmarks/bench_cb.py),
              in the preset's dtype and in NF4: tokens/s of both, the ratio, decode steps, peaks, greedy agreement
    cpu_merge the adapter merge on the CPU (`distill.merge_device=cpu`: what an 8 GB card does after QLoRA): a random
              LoRA adapter of the preset's shape merged into the instruct checkpoint reloaded on the CPU; time, RSS
    nf4       generation memory: the thinking checkpoint in bf16 and in NF4, each generating `--prompts` outputs of up
              to 256 tokens; CUDA memory after the load and at peak, beside the memory plan's weight estimates
    vllm      the generate check on the vLLM backend, where `.venv-vllm` is installed (else one line: skipped)
    paper     `experiment=paper_aime` itself, 1 iteration at short budgets (`run_experiment`) as `method=merge_only`
              (no trace closes at short budgets, `check_paper`): the real pair where its ids resolve (cached, or the
              hub reachable), else the random pair of the real shape; AIME's local files, else AIME-style ones
"""

from __future__ import annotations

import dataclasses
import gc
import random
import shutil
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
CHARS = "abcdefghijklmnopqrstuvwxyz"  # in the testbed tokenizer's alphabet: one token per character


def words(rng: random.Random, n_chars: int) -> str:
    out, size = [], 0
    while size < n_chars:
        w = "".join(rng.choice(CHARS) for _ in range(rng.randint(2, 8)))
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars]


def check_loop(args, device, work: Path, report) -> None:
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


def build_pair(args, device, work: Path, report) -> dict[str, Path]:
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


def check_distill(args, device, cfg, pair, work: Path, report) -> None:
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


def check_merge(args, device, cfg, pair, work: Path, report) -> None:
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


def check_generate(args, device, cfg, pair, work: Path, report, name: str = "generate") -> None:
    from thinkswitch.engines.base import Generator, prompt_token_counts
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.models import ModelPair, load_tokenizer
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
    tok = load_tokenizer(str(pair["thinking"]), cfg.model)  # the prompts as the engines encode them
    prompt_tokens = sum(prompt_token_counts(tok, [chat_prompt(tok, ex["prompt"]) for ex in examples])) / len(examples)
    report({"check": name, "backend": generator.generation.backend,  # as it ran: auto resolved (hf, cb, vllm)
            "configured_backend": cfg.generation.backend, "batch_size": cfg.generation.batch_size,
            "prompt_tokens": round(prompt_tokens, 1),
            "token_budget": budget, "prompts": len(rows), "sampling": dataclasses.asdict(sampling),
            "tokens": tokens, "full_length": sum(r["tokens"] == args.gen_tokens for r in rows), **m.stats,
            "tokens_per_s": round(tokens / m.seconds, 1), "stage_metrics": metrics})


def check_cb(args, device, cfg, pair, work: Path, report) -> None:
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


def check_cpu_merge(args, device, cfg, pair, work: Path, report) -> None:
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


def check_nf4(args, device, cfg, pair, work: Path, report) -> None:
    """CUDA memory of the thinking checkpoint generating in bf16 and in NF4, beside the plan's weight estimates."""
    if device.type != "cuda":
        report({"check": "nf4", "skipped": "CUDA memory only: not on a CPU"})
        return
    import torch

    from thinkswitch.engines.models import generation_quantization, load_model, load_tokenizer
    from thinkswitch.sizing.weights import checkpoint_tensors, generation_weight_bytes

    path = str(pair["thinking"])
    tok = load_tokenizer(path, cfg.model)
    rng = random.Random(4)
    batch = tok([words(rng, 200) for _ in range(args.prompts)], return_tensors="pt", padding=True).to(device)
    tensors, _ = checkpoint_tensors(path)
    for quantization in ("none", "nf4"):
        quant = generation_quantization(quantization, torch.bfloat16)
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


def check_vllm(args, device, cfg, pair, work: Path, report) -> None:
    from thinkswitch.engines.vllm_options import vllm_venv

    if not (vllm_venv() / "bin" / "python").exists():
        report({"check": "vllm", "skipped": "not installed", "venv": str(vllm_venv())})
        return
    check_generate(args, device, preset(args, pair, work, ("generation.backend=vllm",)), pair, work, report,
                   name="vllm")


def paper_model(work: Path, pair: dict[str, Path]) -> tuple[list[str], str]:
    """The paper's own pair where its ids resolve here (cached, or the hub reachable), else the random pair of its
    shape (`model=local`): (overrides, which)."""
    from thinkswitch.setup import resolve_pair

    cfg = compose(["experiment=paper_aime"], work / "unused")
    try:
        resolve_pair(cfg.model, Path(cfg.cache_dir).expanduser())
        return [], f"{cfg.model.thinking} and {cfg.model.instruct}"
    except Exception as e:  # noqa: BLE001 - not cached and no hub: the random pair of the real shape
        return (["model=local", f"model.instruct={pair['instruct']}", f"model.thinking={pair['thinking']}"],
                f"the random pair ({type(e).__name__}: {str(e)[:200]})")


def aime_data(work: Path) -> tuple[list[str], str]:
    """`domain=aime_local` on the local AIME files where `data_dir` holds them, else on files of random words with
    integer answers written under `work` (the preset's grader and prompts' form, no hub): (overrides, which)."""
    from thinkswitch.store.io import write_jsonl

    cfg = compose(["experiment=paper_aime", "domain=aime_local"], work / "unused")
    if all(Path(f).exists() for f in (*cfg.domain.train.files, *cfg.domain.eval.files)):
        return ["domain=aime_local"], f"AIME from {cfg.data_dir}"
    rng = random.Random(6)
    for name in ("aime24", "aime25", "aime26"):
        write_jsonl(work / "data" / "aime" / f"{name}.jsonl", [
            {"prompt": f"{name} {i}: {words(rng, 80)}. Put the final answer in \\boxed{{}}.",
             "answer": str(rng.randint(0, 999))} for i in range(12)])
    return ["domain=aime_local", f"data_dir={work / 'data'}"], "random AIME-style files (no local AIME data)"


def check_paper(args, device, pair, work: Path, report) -> None:
    """`experiment=paper_aime` run end to end at a tiny scale: 1 iteration, 8 training prompts, 8 evaluation
    questions, outputs cut to --gen-tokens, on AIME's local files (`domain=aime_local`) where they are. As
    `method=merge_only` (evaluate, merge, evaluate, with the preset's engine, sampling and memory plan): at short
    budgets no trace closes (random weights; Qwen3-4B's AIME traces run far past 1,024 tokens), so the strip stage
    would leave nothing to distil; the preset's QLoRA at this shape is the `distill` row."""
    from thinkswitch.loop import run_experiment

    model, which = paper_model(work, pair)
    data, data_which = aime_data(work)
    overrides = ["experiment=paper_aime", *data, *model, "method=merge_only", f"device={args.device}", "iterations=1",
                 "domain.train_prompts=8", "domain.eval_size=8",
                 f"model.sampling.thinking.max_new_tokens={args.gen_tokens}",
                 f"model.sampling.instruct.max_new_tokens={args.gen_tokens}", "tracking.mode=disabled",
                 "stage_cache=null", *([f"shard_size={args.shard_size}"] if args.shard_size else [])]
    with Meter(device) as m:
        summary = run_experiment(compose(overrides, work / "run"))
    report({"check": "paper", "pair": which, "data": data_which, "overrides": overrides, **m.stats,
            "stage_seconds": summary["stage_seconds"],
            "final": {k: v for k, v in summary["final"].items() if k.endswith("/accuracy")}})
