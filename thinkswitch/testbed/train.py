"""Training the testbed pair: a tiny Qwen3 thinking/instruct twin trained locally on CPU.

Task: sum the digits of a random digit string. The THINKING variant writes running partial sums
inside ``<think>`` before answering; the INSTRUCT variant answers directly and, having been
fine-tuned on a small fixed pool of problems, is clearly less accurate. Both variants are
fine-tuned from one shared base, so interpolating their weights is meaningful.

Formats (user message / assistant text after the generation prompt), for digits ``6041938``:

* user:      ``sum 6041938``
* thinking:  ``6+0=6,+4=10,+1=11,+9=20,+3=23,+8=31\\n</think>\\n\\n31`` then ``<|im_end|>``
  (the generation prompt ``<|im_start|>assistant\\n<think>\\n`` already opened the trace)
* instruct:  ``31`` then ``<|im_end|>``
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from thinkswitch.config import Role, TestbedSpec
from thinkswitch.data.testbed_task import _problems
from thinkswitch.engines.chat import THINK_CLOSE as END_THINK
from thinkswitch.testbed.tokenizer import build_tokenizer, load_template

if TYPE_CHECKING:  # torch / transformers are imported lazily: importing this module stays cheap
    import torch
    import transformers

logger = logging.getLogger(__name__)


def thinking_completion(answer: int, trace: str) -> str:
    """Assistant text a perfect thinking model generates after its generation prompt (no eos)."""
    return f"{trace}\n{END_THINK}\n\n{answer}"


class _Encoder:
    """Turns (prompt, completion) pairs into padded training tensors, loss on completion + eos."""

    def __init__(self, tok: transformers.PreTrainedTokenizerFast) -> None:
        self.tok = tok
        self.eos, self.pad = tok.eos_token_id, tok.pad_token_id
        self.templates = {v: load_template(v) for v in Role}
        self.affixes: dict[str, tuple[list[int], list[int]]] = {}
        for v in Role:  # render each template once; the user text is spliced in between
            pre, post = self._render("\x00", v).split("\x00")
            self.affixes[v] = (self._ids(pre), self._ids(post))
            assert self.prompt_ids("sum 123", v) == self._ids(self._render("sum 123", v))

    def _render(self, user: str, variant: str) -> str:
        return self.tok.apply_chat_template([{"role": "user", "content": user}], chat_template=self.templates[variant],
                                            add_generation_prompt=True, tokenize=False)

    def _ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def prompt_ids(self, user: str, variant: str) -> list[int]:
        pre, post = self.affixes[variant]
        return pre + self._ids(user) + post

    def batch(self, items: list[tuple[str, str, str]], groups: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """items: (user, completion, variant) -> ``groups`` length-sorted sub-batches of right-padded
        input ids and labels (-100 = no loss); sorting by length cuts padding."""
        rows = []
        for user, completion, variant in items:
            p = self.prompt_ids(user, variant)
            c = self._ids(completion) + [self.eos]
            rows.append((p, c))
        rows.sort(key=lambda r: len(r[0]) + len(r[1]))
        size = math.ceil(len(rows) / groups)
        return [self._pad(rows[i:i + size]) for i in range(0, len(rows), size)]

    def _pad(self, rows: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            ids[i, :len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p):len(p) + len(c)] = torch.tensor(c)
        return ids, labels


def _train(model: torch.nn.Module, batches: Callable[[], list[tuple[torch.Tensor, torch.Tensor]]],
           steps: int, lr: float, spec: TestbedSpec, desc: str) -> float:
    """AdamW + linear warmup + cosine decay; each step sums token losses over the sub-batches."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=spec.weight_decay)
    warm = min(spec.warmup_steps, max(steps // 10, 1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(steps, 1))))))
    model.train()
    ema = float("nan")
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=1.0)
    for _ in bar:
        parts = batches()
        n_tok = sum(int((lab != -100).sum()) for _, lab in parts)
        total = 0.0
        for ids, lab in parts:
            # right padding + causal attention: pads never influence supervised positions, no mask needed
            logits = model(input_ids=ids, use_cache=False).logits
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), lab[:, 1:].flatten(),
                                   ignore_index=-100, reduction="sum") / n_tok
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema = total if math.isnan(ema) else 0.95 * ema + 0.05 * total
        bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
    bar.close()
    model.eval()
    logger.info("%s: %d steps, final loss (ema) %.4f", desc, steps, ema)
    return ema


def _model_config(spec: TestbedSpec, tok: transformers.PreTrainedTokenizerFast) -> transformers.Qwen3Config:
    import transformers

    return transformers.Qwen3Config(
        vocab_size=len(tok), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim, max_position_embeddings=512,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None, dtype="float32")


def _generation_config(variant: str, tok: transformers.PreTrainedTokenizerFast) -> transformers.GenerationConfig:
    import transformers

    sampling = dict(temperature=0.6, top_p=0.95, top_k=20) if variant == Role.thinking else dict(
        temperature=0.7, top_p=0.8, top_k=20)
    return transformers.GenerationConfig(do_sample=True, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id, **sampling)


def train_variants(spec: TestbedSpec, out: Path) -> None:
    """Train base, then the two variants from it; save both checkpoints under ``out``."""
    import torch
    import transformers

    torch.manual_seed(spec.seed)
    tok = build_tokenizer()
    enc = _Encoder(tok)
    model = transformers.Qwen3ForCausalLM(_model_config(spec, tok))
    logger.info("testbed model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    bs = spec.batch_size

    def traced(stream: Iterator, k: int) -> list[tuple[str, str, str]]:
        return [(u, thinking_completion(a, t), "thinking") for u, a, t in (next(stream) for _ in range(k))]

    base_stream = _problems(random.Random(f"base-{spec.seed}"), spec, "train")
    base_rng = random.Random(f"base-mix-{spec.seed}")

    def base_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
        k = sum(base_rng.random() < spec.base_traced_frac for _ in range(bs))
        direct = [(u, str(a), "instruct") for u, a, _ in (next(base_stream) for _ in range(bs - k))]
        return (enc.batch(traced(base_stream, k)) if k else []) + (enc.batch(direct, groups=1) if direct else [])

    _train(model, base_batches, spec.base_steps, spec.lr, spec, "testbed base")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}

    think_stream = _problems(random.Random(f"thinking-{spec.seed}"), spec, "train")
    torch.manual_seed(spec.seed + 1)
    _train(model, lambda: enc.batch(traced(think_stream, bs)), spec.thinking_steps, spec.finetune_lr, spec,
           "testbed thinking")
    _save(model, "thinking", out / "thinking")

    model.load_state_dict(base_state)
    pool_rng = random.Random(f"instruct-{spec.seed}")
    pool, seen = [], set()
    for u, a, _ in _problems(pool_rng, spec, "train"):
        if u not in seen:
            seen.add(u)
            pool.append((u, str(a), "instruct"))
        if len(pool) == spec.instruct_pool_size:
            break
    order: list[int] = []

    def pool_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
        if len(order) < bs:  # epoch-wise reshuffle of the fixed pool
            fresh = list(range(len(pool)))
            pool_rng.shuffle(fresh)
            order.extend(fresh)
        picked = [pool[order.pop()] for _ in range(min(bs, len(pool)))]
        return enc.batch(picked, groups=1)

    torch.manual_seed(spec.seed + 2)
    _train(model, pool_batches, spec.instruct_steps, spec.finetune_lr, spec, "testbed instruct")
    _save(model, "instruct", out / "instruct")


def _save(model: transformers.PreTrainedModel, variant: str, path: Path) -> None:
    tok = build_tokenizer(variant)
    model.generation_config = _generation_config(variant, tok)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
