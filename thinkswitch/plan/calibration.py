"""`thinkswitch-plan --calibrate FILE`: the file checked row by row before the time model reads it, so that a file
that is not a `make gpu-check` output is one line naming its file and line (not a KeyError or a division by
zero)."""

from __future__ import annotations

import json
from numbers import Number
from pathlib import Path

from thinkswitch.errors import ConfigError

# what `engines.timing.calibrate` reads of each kind of row: field -> whether it must be a number > 0 (else a str)
NEEDS = {"env": {"gpu": False}, "build": {"params": True}, "distill": {"tokens_per_s": True},
         "cb": {"cb_tokens_per_s": True, "static_tokens_per_s": True, "prompts": True, "tokens": True,
                "longest": True, "static_steps": True}}  # cb: the ragged-lengths benchmark, both engines
GENERATE = {"tokens_per_s": True, "prompts": True, "tokens": True}  # rows with a `backend` (hf, cb, vllm)
OPTIONAL = ("concurrency", "batch_size", "prompt_tokens", "static_batch")  # numbers > 0 where given
MEASURED = ("tokens_per_s", "cb_tokens_per_s")  # a row with neither measured nothing (skipped, a CPU row say)


def _problem(row, fields: dict[str, bool]) -> str | None:
    for key, number in fields.items():
        value = row.get(key)
        if number and (isinstance(value, bool) or not isinstance(value, Number) or not value > 0):
            return f"{key}: expected a number > 0, got {value!r}"
        if not number and not (isinstance(value, str) and value):
            return f"{key}: expected a name, got {value!r}"
    return None


def check_rows(path: Path) -> None:
    """Raise ConfigError `<file>:<line>: ...` at the first row `calibrate` could not use: not JSON, not an object,
    or a row it reads (env, build, distill, cb, a generate measurement) without its fields. Rows of other checks and
    rows that failed (`error`) are skipped, as `calibrate` skips them."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--calibrate {path}: cannot read it ({e})") from None
    kinds = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ConfigError(f"--calibrate {path}:{n}: not valid JSON (a `make gpu-check` output has one JSON "
                              f"object per line)") from None
        if not isinstance(row, dict) or not isinstance(row.get("check"), str):
            raise ConfigError(f"--calibrate {path}:{n}: not a gpu-check row (an object with a 'check' name)")
        if row.get("error"):
            continue
        fields = NEEDS.get(row["check"]) or (GENERATE if row.get("backend") in ("hf", "cb", "vllm") else None)
        if fields is None or (row["check"] not in ("env", "build") and not any(row.get(k) for k in MEASURED)):
            continue
        why = _problem(row, fields) or _problem(row, {k: True for k in OPTIONAL if row.get(k) is not None})
        if why:
            raise ConfigError(f"--calibrate {path}:{n}: {row['check']} row: {why}")
        kinds.add(row["check"] if row["check"] in NEEDS else "generate")
    for kind, what in (("env", "which GPU it ran on"), ("build", "the checkpoint's parameters")):
        if kind not in kinds:
            raise ConfigError(f"--calibrate {path}: no {kind} row ({what}); is it a `make gpu-check` output?")
