"""A tiny Qwen3 pair with the Qwen3-*-2507 conventions, for plumbing tests on real task text.

Byte-level BPE tokenizer (any text round-trips), `<think>`/`</think>` as added tokens, the
2507-style chat templates (the thinking one opens `<think>` in the generation prompt). The two
models are trained for a few seconds to end every answer the way the real pair does: the thinking
model closes a short trace and gives a boxed answer, the instruct model answers directly. Scores
are meaningless; formats, lengths and special tokens are what the real pair produces. The answer, 70, is
the gold of one AIME 2025 problem (and one of 2026's), so a filter on correct labels (method=gold_oracle)
keeps something real to distil.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TAGS = ["<think>", "</think>"]
ANSWER = "70"
COMPLETIONS = {"thinking": f"the answer is short.\n</think>\n\n\\boxed{{{ANSWER}}} yes",
               "instruct": f"\\boxed{{{ANSWER}}} yes"}


def build_tokenizer(corpus: list[str]):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus + list(COMPLETIONS.values()), trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TAGS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", clean_up_tokenization_spaces=False)


def build_tiny_pair(out: Path, prompts: list[str], steps: int = 80) -> tuple[str, str]:
    """Train and save `out/instruct` and `out/thinking`; returns their paths."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from thinkswitch.testbed.tokenizer import load_template

    torch.manual_seed(0)
    base_tok = build_tokenizer(prompts)
    config = Qwen3Config(vocab_size=len(base_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         tie_word_embeddings=True, eos_token_id=base_tok.eos_token_id,
                         pad_token_id=base_tok.pad_token_id)
    base = Qwen3ForCausalLM(config)
    paths = []
    for variant in ("instruct", "thinking"):
        tok = build_tokenizer(prompts)
        tok.chat_template = load_template(variant)
        model = Qwen3ForCausalLM(config)
        model.load_state_dict(base.state_dict())  # one ancestor: the pair can be interpolated
        _fit(model, tok, prompts, COMPLETIONS[variant], steps)
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        path = out / variant
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(str(path))
    return paths[0], paths[1]


def _fit(model, tok, prompts: list[str], completion: str, steps: int) -> None:
    """Teach the model to answer every prompt with `completion` (loss on the completion only)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    target = tok(completion + tok.eos_token, add_special_tokens=False)["input_ids"]
    model.train()
    for step in range(steps):
        batch = [prompts[(step * 4 + i) % len(prompts)] for i in range(4)]
        heads = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                         tokenize=False) for p in batch]
        rows = [tok(h, add_special_tokens=False)["input_ids"] + target for h in heads]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
            labels[i, width - len(target):] = torch.tensor(target)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
