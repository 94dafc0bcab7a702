"""Built-in default model pair: a tiny Qwen3 thinking/instruct twin trained locally on CPU.

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

import argparse
import contextlib
import hashlib
import importlib.resources
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from thinkswitch.config import ROLES, SamplingConfig, TestbedSpec
from thinkswitch.data.testbed_task import _problems, task_examples
from thinkswitch.engines.chat import THINK_CLOSE as END_THINK
from thinkswitch.engines.chat import THINK_OPEN as THINK
from thinkswitch.errors import DataError
from thinkswitch.store.digests import hash_file
from thinkswitch.store.io import atomic_path
from thinkswitch.store.locks import HolderLock

if TYPE_CHECKING:  # torch / transformers are imported lazily: importing this module stays cheap
    import torch
    import transformers

logger = logging.getLogger(__name__)

CODE_VERSION = "1"  # bump whenever a change here alters the built weights
MANIFEST = "manifest.json"
VARIANTS = ROLES  # the two checkpoints of the pair
EVAL_N = 200
EVAL_SEED = 1234

PAD, IM_START, IM_END, UNK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"
_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz \n+=,.:?"


def thinking_completion(answer: int, trace: str) -> str:
    """Assistant text a perfect thinking model generates after its generation prompt (no eos)."""
    return f"{trace}\n{END_THINK}\n\n{answer}"


# ----------------------------------------------------------------------------- tokenizer

def load_template(variant: str) -> str:
    """Chat template text of ``variant`` ("instruct" or "thinking") from package data."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    return (importlib.resources.files("thinkswitch.testbed") / "templates" / f"testbed_{variant}.jinja").read_text()


def build_tokenizer(variant: str = "instruct") -> transformers.PreTrainedTokenizerFast:
    """Character-level tokenizer (one token per character) with Qwen-style special tokens."""
    import transformers
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate([PAD, IM_START, IM_END, THINK, END_THINK, UNK, *_CHARS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, IM_START, IM_END)])
    # like Qwen3: think tags are added but not "special", so skip_special_tokens keeps them
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK, END_THINK)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False, model_max_length=512,
        chat_template=load_template(variant))


# ----------------------------------------------------------------------------- training

class _Encoder:
    """Turns (prompt, completion) pairs into padded training tensors, loss on completion + eos."""

    def __init__(self, tok: transformers.PreTrainedTokenizerFast) -> None:
        self.tok = tok
        self.eos, self.pad = tok.eos_token_id, tok.pad_token_id
        self.templates = {v: load_template(v) for v in VARIANTS}
        self.affixes: dict[str, tuple[list[int], list[int]]] = {}
        for v in VARIANTS:  # render each template once; the user text is spliced in between
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

    sampling = dict(temperature=0.6, top_p=0.95, top_k=20) if variant == "thinking" else dict(
        temperature=0.7, top_p=0.8, top_k=20)
    return transformers.GenerationConfig(do_sample=True, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id, **sampling)


def _train_variants(spec: TestbedSpec, out: Path) -> None:
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


# ----------------------------------------------------------------------------- evaluation

def evaluate_testbed(path: str | Path, n: int = EVAL_N, spec: TestbedSpec | None = None, seed: int = EVAL_SEED,
                     batch_size: int = 100, variants: tuple[str, ...] = VARIANTS) -> dict:
    """Greedy held-out accuracy and mean generated tokens per answer (eos included) per variant, generated
    and graded as the loop's evaluation does (`generate_texts`, the `last_integer` grader)."""
    import torch
    import transformers

    from thinkswitch.data.grading import get_grader
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.hf import generate_texts
    from thinkswitch.stages.evaluate import final_answer

    path = Path(path)
    if spec is None:
        spec = TestbedSpec(**json.loads((path / MANIFEST).read_text())["spec"])
    examples = task_examples(n, seed, "eval", spec)
    grade = get_grader("last_integer")
    greedy = SamplingConfig(do_sample=False, max_new_tokens=8 * spec.max_digits + 16)
    results = {}
    for variant in variants:
        tok = transformers.AutoTokenizer.from_pretrained(path / variant, padding_side="left")
        model = transformers.AutoModelForCausalLM.from_pretrained(path / variant, dtype=torch.float32).eval()
        prompts = [chat_prompt(tok, ex["prompt"]) for ex in examples]
        gens = generate_texts(model, tok, prompts, greedy, batch_size, seed, desc=f"testbed {variant}")
        correct = sum(grade(final_answer(g["output"], variant), ex["answer"])[1] for g, ex in zip(gens, examples))
        results[variant] = {"accuracy": correct / n, "mean_tokens": sum(g["tokens"] for g in gens) / n}
        logger.info("testbed %s: held-out accuracy %.3f, %.1f tokens/answer", variant,
                    results[variant]["accuracy"], results[variant]["mean_tokens"])
    return results


# ----------------------------------------------------------------------------- building / caching

def spec_hash(spec: TestbedSpec) -> str:
    """Short hash of the spec and the code version (names the cache directory)."""
    blob = json.dumps({"spec": asdict(spec), "code_version": CODE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _complete(path: Path) -> bool:
    return (path / MANIFEST).is_file()


SHIPPED = Path(str(importlib.resources.files("thinkswitch.testbed") / "pair"))


def shipped_pair(spec: TestbedSpec, root: Path = SHIPPED) -> Path | None:
    """The pair shipped with the package (`thinkswitch/testbed_pair/`), when `spec` is the one it was built
    from; its files are checked against the manifest's SHA-256 first.

    Shipping the built pair (3.6 MB) makes the default testbed the same on every machine: training it again
    elsewhere converges to another pair (float differences between CPUs change what a few hundred steps of
    training reach), and so to other numbers. A spec that differs is built locally, as before.
    """
    if not (root / MANIFEST).is_file():
        return None
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("spec_hash") != spec_hash(spec):
        return None
    for name, digest in manifest["files"].items():
        if not (root / name).is_file() or hash_file(root / name) != digest:
            raise DataError(f"{root / name}: the shipped testbed pair is damaged (missing, or not the SHA-256 its "
                            f"manifest gives); reinstall thinkswitch, or build one with a changed model.testbed.* key")
    return root


def ship(built: Path, out: Path) -> None:
    """Copy a built pair into the package (`out`), with the SHA-256 of every file in its manifest."""
    manifest = json.loads((built / MANIFEST).read_text())
    with atomic_path(out) as tmp:
        for variant in VARIANTS:
            shutil.copytree(built / variant, tmp / variant)
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        manifest |= {"spec_hash": spec_hash(TestbedSpec(**manifest["spec"])),
                     "files": {name: hash_file(tmp / name) for name in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def build_testbed(spec: TestbedSpec, cache_dir: Path, num_threads: int | None = None) -> Path:
    """The testbed pair of `spec`: the shipped one (the default spec), else built once and cached under
    `cache_dir`; returns a directory holding ``instruct/`` and ``thinking/`` checkpoints."""
    import torch
    import transformers

    shipped = shipped_pair(spec)
    if shipped is not None:
        return shipped
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"testbed-{spec_hash(spec)}"
    if _complete(final):
        return final
    with HolderLock(cache_dir / f".{final.name}.lock", stage="building the testbed"):  # one builder at a time
        if _complete(final):  # another process finished while we waited
            return final
        if final.exists():  # incomplete leftover (not produced by this code's atomic rename)
            shutil.rmtree(final, ignore_errors=True)
        start = time.time()
        logger.info("building testbed %s (spec %s)", final.name, asdict(spec))
        with atomic_path(final, replace=False) as tmp, _threads(num_threads):
            _train_variants(spec, tmp)
            train_s = time.time() - start
            evals = evaluate_testbed(tmp, EVAL_N, spec)
            manifest = {"spec": asdict(spec), "code_version": CODE_VERSION, "train_seconds": round(train_s, 1),
                        "build_seconds": round(time.time() - start, 1), "num_threads": torch.get_num_threads(),
                        "eval": {"n": EVAL_N, "seed": EVAL_SEED, **evals},
                        "torch": torch.__version__, "transformers": transformers.__version__}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        logger.info("testbed built in %.1fs at %s", time.time() - start, final)
    return final


def main() -> None:
    """``python -m thinkswitch.testbed.build --out DIR [--ship]``: build (or reuse) the default testbed in DIR; with
    --ship, copy it into the package as the shipped pair (what maintainers do when the spec changes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="cache directory")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ship", action="store_true", help="ship the built pair with the package")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = TestbedSpec()
    path = (args.out / f"testbed-{spec_hash(spec)}") if args.ship else build_testbed(spec, args.out, args.threads)
    if args.ship:
        ship(path, SHIPPED)
    logger.info("manifest: %s", (path / MANIFEST).read_text())


if __name__ == "__main__":
    main()
