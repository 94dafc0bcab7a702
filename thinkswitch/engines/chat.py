"""What the chat format of a Qwen3-2507 pair is made of: roles, think tags, the prompt the model sees."""

from __future__ import annotations

from typing import Optional

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def chat_prompt(tokenizer, user: str, system: Optional[str] = None) -> str:
    """The prompt text the model sees: its own chat template with the generation prompt."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
