"""What `experiment=paper_aime` needs on 8 / 24 / 80 GB cards, from `thinkswitch.engines.memory`'s plans.

    python benchmarks/memory_table.py [--cards 8,24,80] [--prompt-tokens 512]

Prints a Markdown table (docs/engines-and-gpus.md, "The paper on one GPU", is this output). Computed, not measured:
the preset is composed as `thinkswitch experiment=paper_aime` would compose it, the model shape is
Qwen3-4B-2507's config, and the card's free memory is assumed to be its size less a CUDA context.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thinkswitch.engines.memory import (  # noqa: E402
    KNOWN_CONFIGS,
    GiB,
    config_tensors,
    describe,
    fmt_bytes,
    is_linear_weight,
    kv_bytes_per_token,
    lora_param_count,
    nf4_weight_bytes,
    numel,
    param_count,
    plan_distill,
    plan_generation,
    resolve_dtype,
    vllm_kv_pool_bytes,
    weight_bytes,
)
from thinkswitch.errors import ConfigError  # noqa: E402

CUDA_CONTEXT = GiB // 2  # assumed: what the CUDA context and torch take before the model loads


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from thinkswitch.cli import to_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(hydra_compose(config_name="config", overrides=["run_dir=/tmp/unused", *overrides]))


def gib(n: int) -> str:
    return f"{n / GiB:.1f}"


def hf_cell(kv: int, weights: int, free: int, prompts: int, prompt_tokens: int, max_new: int, cap: int) -> str:
    try:
        plan = plan_generation(kv_bytes_per_token=kv, prompt_tokens=[prompt_tokens] * prompts,
                               max_new_tokens=max_new, free_bytes=free, weight_bytes=weights, batch_size=cap,
                               device="cuda:0")
    except ConfigError as e:
        if str(e).startswith("the weights"):
            return "no: the weights do not fit"
        return f"no: {fmt_bytes(free - weights)} left after the weights"
    return f"{plan.batch_size} ({plan.batches} batches)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", default="8,24,80", help="card sizes in GiB, comma-separated")
    ap.add_argument("--prompt-tokens", type=int, default=512, help="assumed longest prompt (AIME: under 512)")
    args = ap.parse_args(argv)

    cfg = compose(["experiment=paper_aime"])
    config = KNOWN_CONFIGS[cfg.model.thinking]
    dtype = resolve_dtype(cfg.model.dtype, "cuda")
    tensors = config_tensors(config)
    weights = weight_bytes(tensors, dtype)
    kv = kv_bytes_per_token(config, dtype)
    think, inst = cfg.model.sampling.thinking.max_new_tokens, cfg.model.sampling.instruct.max_new_tokens
    cap, k = cfg.generation.batch_size, cfg.generation.samples_per_prompt
    n_train, n_eval = cfg.domain.train_prompts * k, cfg.domain.eval_size
    seq = (args.prompt_tokens + think) * kv
    trainer = cfg.trainer
    print(f"experiment=paper_aime: {cfg.model.thinking} shape, {dtype}, weights {fmt_bytes(weights)}, KV cache "
          f"{fmt_bytes(kv)}/token, {fmt_bytes(seq)} per thinking sequence ({args.prompt_tokens} prompt + {think} new "
          f"tokens); generation.batch_size={cap}; trainer={trainer.name}, max_length={trainer.sft['max_length']}, "
          f"per_device_train_batch_size={trainer.sft['per_device_train_batch_size']}, "
          f"activation_checkpointing={trainer.sft['activation_checkpointing']}. Free memory assumed: the card less "
          f"{fmt_bytes(CUDA_CONTEXT)} of CUDA context; HF plans hold back 10% of what is left after the weights; vLLM "
          "at gpu_memory_utilization=0.9 with 2 GiB for its activations. Computed, not measured on a GPU.\n")
    print(f"| card | free | bf16 weights | KV per sequence ({args.prompt_tokens} + {think:,} tokens) "
          "| HF: label batch (thinking, "
          f"{n_train} prompts) | HF: eval batch thinking / instruct ({n_eval} each) | vLLM: KV pool (full-length "
          "thinking sequences at once) | QLoRA distill: training / adapter merge (GiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    plans = []
    for size in (int(c) for c in args.cards.split(",")):
        total = size * GiB
        free = total - CUDA_CONTEXT
        labels = hf_cell(kv, weights, free, n_train, args.prompt_tokens, think, cap)
        ev_think = hf_cell(kv, weights, free, n_eval, args.prompt_tokens, think, cap)
        ev_inst = hf_cell(kv, weights, free, n_eval, args.prompt_tokens, inst, cap)
        pool = vllm_kv_pool_bytes(total, weights)
        vllm = f"{gib(pool)} GiB ({pool // seq})" if pool >= seq else f"{gib(pool)} GiB (no: not one sequence)"
        distill = plan_distill(config, dtype=dtype, quantize_4bit=trainer.quantize_4bit, lora=dict(trainer.lora),
                               sft=dict(trainer.sft), bnb=dict(trainer.bnb), free_bytes=free, device="cuda:0")
        train, merge = distill.train_bytes, distill.merge_bytes
        cells = [f"{size} GB", f"{gib(free)} GiB", f"{gib(weights)} GiB", f"{gib(seq)} GiB", labels,
                 f"{ev_think} / {ev_inst}", vllm,
                 f"{gib(train)} ({fits(train, free)}) / {gib(merge)} ({fits(merge, free)})"]
        print("| " + " | ".join(cells) + " |")
        plans.append((size, free, distill))
    size, free, distill = plans[len(plans) // 2]
    print(f"\nThe plans as the log would give them, on the {size} GB card:\n")
    try:
        print(describe(plan_generation(kv_bytes_per_token=kv, prompt_tokens=[args.prompt_tokens] * n_train,
                                       max_new_tokens=think, free_bytes=free, weight_bytes=weights, batch_size=cap,
                                       device="cuda:0")))
    except ConfigError as e:
        print(f"refused: {e}")
    print("\n" + describe(distill))
    nf4 = nf4_weight_bytes(tensors, bool(trainer.bnb.get("bnb_4bit_use_double_quant")))
    linear = sum(numel(shape) for name, shape in tensors if is_linear_weight(name, shape))
    print(f"\nThe NF4 base: {linear / 1e9:.2f}B linear weights in NF4 and {(param_count(tensors) - linear) / 1e9:.2f}B "
          f"others (embeddings, norms) in fp32, {fmt_bytes(nf4)}; LoRA r={trainer.lora['r']} on all linear layers: "
          f"{lora_param_count(tensors, trainer.lora['r']) / 1e6:.1f}M parameters.")


def fits(need: int, free: int) -> str:
    return "fits" if need <= free else "does not fit"

if __name__ == "__main__":
    main()
