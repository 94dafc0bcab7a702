"""Atomic file writes and JSONL helpers: nothing half-written is ever taken for finished."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from thinkswitch.errors import DataError


@contextmanager
def atomic_path(path: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories. With `replace=False` an existing `path` wins: what the block
    wrote is discarded (concurrent writers of the same content, e.g. stage-cache entries).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not replace:
            try:
                os.rename(target, path)  # a non-empty directory already there: refused
            except OSError:
                if not path.exists():
                    raise
            return
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_size(value: Any) -> int:
    """Bytes from `1GB`, `500MB`, `2GiB` or a plain number (Hugging Face's decimal units)."""
    text = str(value).strip().upper().replace(" ", "")
    number = text.rstrip("BKMGTI")
    unit = text[len(number):]
    try:
        size = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError(f"expected a size like 1GB, 500MB or 2GiB, got {value!r}") from None
    if size < 1:
        raise ValueError(f"expected a positive size, got {value!r}")
    return int(size)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows

