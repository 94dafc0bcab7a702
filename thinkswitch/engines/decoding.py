"""Generated token ids to records, for every engine (HF static batches, continuous batching, vLLM).

One place decides what an output is (and, `results_from`, which results an interrupted call already has):
the ids up to the first end-of-sequence token, decoded with the
special tokens removed except the think tags, plus how many tokens were generated (EOS included) and
whether the generation stopped by itself (False when cut off by `max_new_tokens`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from thinkswitch.engines.chat import THINK_CLOSE, THINK_OPEN


def eos_ids(generation_config: Any, tokenizer) -> set[int]:
    """The ids that end a generation: the checkpoint's generation_config `eos_token_id` (an id or a list) and the
    tokenizer's EOS."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    return ids


def drop_tokens(tokenizer) -> set[str]:
    """Special tokens removed from decoded outputs: all of them but the think tags (the trace stays readable)."""
    return {t for t in tokenizer.all_special_tokens if t not in (THINK_OPEN, THINK_CLOSE)}


def decode(ids: Iterable[int], eos: set[int], tokenizer, drop: set[str]) -> dict:
    """One record from the generated ids (prompt excluded): `output`, `tokens`, `stopped`."""
    ids = list(ids)
    stop = next((j for j, t in enumerate(ids) if t in eos), None)
    kept = ids if stop is None else ids[: stop + 1]
    text = tokenizer.decode(kept[:-1] if stop is not None else kept, skip_special_tokens=False)
    for tok in drop:
        text = text.replace(tok, "")
    return {"output": text, "tokens": len(kept), "stopped": stop is not None}


def results_from(done: Optional[Mapping[int, dict]], total: int) -> list[Optional[dict]]:
    """The `total` results of a generation call by index: those `done` holds (an interrupted call's, index out of
    range ignored), None where still to generate."""
    results: list[Optional[dict]] = [None] * total
    for i, r in (done or {}).items():
        if 0 <= i < total:
            results[i] = r
    return results
