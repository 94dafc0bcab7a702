"""The testbed pair's tokenizer: one token per character, Qwen-style special tokens, and the chat templates
shipped with the package (templates/testbed_<variant>.jinja)."""

from __future__ import annotations

import importlib.resources
from typing import TYPE_CHECKING

from thinkswitch.config import Role
from thinkswitch.engines.chat import THINK_CLOSE as END_THINK
from thinkswitch.engines.chat import THINK_OPEN as THINK

if TYPE_CHECKING:  # transformers is imported lazily: importing this module stays cheap
    import transformers

PAD, IM_START, IM_END, UNK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"
_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz \n+=,.:?"


def load_template(variant: str) -> str:
    """Chat template text of ``variant`` ("instruct" or "thinking") from package data."""
    if variant not in tuple(Role):
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
