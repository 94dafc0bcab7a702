"""Atomic file writes and JSONL helpers: nothing half-written is ever taken for finished."""

from __future__ import annotations

import codecs
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from thinkswitch.errors import DataError, DiskFull

# The longest line a run's own JSONL files hold (a generation of 32,768 tokens is ~200 KB).
MAX_ARTIFACT_LINE = 16 << 20


NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device": libraries that wrap OSError keep the text


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC, or a library's error that carries its text (safetensors' and torch's file writers)."""
    return isinstance(error, DiskFull) or (isinstance(error, OSError) and error.errno == errno.ENOSPC) or (
        NO_SPACE in str(error))


def human_size(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def disk_full(path: Path, needed: Optional[int] = None, written: int = 0) -> DiskFull:
    """The one-line error for a write to `path` that filled its disk: the space free and the space needed
    (`needed` when known, else more than the `written` bytes it got down before the disk filled)."""
    where = next((p for p in [Path(path), *Path(path).parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(where).free
    need = (f"needs {human_size(needed)}" if needed else f"needs more than the {human_size(written)} it wrote"
            if written else "needs more")
    return DiskFull(errno.ENOSPC, f"{path}: {NO_SPACE} ({human_size(free)} free; this write {need})")


def _bytes_under(path: Path) -> int:
    files = [path] if path.is_file() else path.rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file())


@contextmanager
def atomic_path(path: Path, replace: bool = True, size: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories. With `replace=False` an existing `path` wins: what the block
    wrote is discarded (concurrent writers of the same content, e.g. stage-cache entries). A block that
    fills the disk raises `DiskFull` naming `path` and the space it needed (`size` bytes when known).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise disk_full(path, size) if is_disk_full(e) else e from None
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
    except Exception as e:
        if is_disk_full(e) and not isinstance(e, DiskFull):
            raise disk_full(path, size, _bytes_under(tmp)) from None
        raise
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
    data = text.encode("utf-8")
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def lines(path: Path, limit: int, hint: str = "") -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 file (a BOM dropped, line endings kept).

    A line is read at most `limit` + 1 bytes at a time, so an over-long one is refused (a DataError naming
    file and line, then `hint`) without being read whole.
    """
    path = Path(path)
    with path.open("rb") as f:
        lineno = 0
        while raw := f.readline(limit + 1):
            lineno += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise DataError(f"{path}:{lineno}: line larger than {limit:,} bytes{hint}")
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start} of the line)") from None


def iter_jsonl(path: Path, limit: int = MAX_ARTIFACT_LINE, hint: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSONL file; a DataError names the file and line of
    a line that is not a JSON object (a torn last line included)."""
    for lineno, line in lines(path, limit, hint):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {json_type(obj)}")
        yield lineno, obj


def json_type(obj: Any) -> str:
    """How an error message names a JSON value's type."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number")


def read_jsonl(path: Path) -> list[dict]:
    """Every object of a JSONL file (see `iter_jsonl`)."""
    return [obj for _, obj in iter_jsonl(path)]
