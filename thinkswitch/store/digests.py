"""Digests of the files a stage wrote: recorded with its completion marker and its stage-cache entry,
and checked before either is trusted again.

A stage's outputs are files (`pairs.jsonl`) and directories (a checkpoint: shards, config, tokenizer
files); every file is recorded with its size and SHA-256, by its path relative to the stage's
directory. SHA-256 because CPUs of the last decade hash it in hardware (SHA-NI: about 1.1 GB/s per
core, twice BLAKE2b's speed there; `make bench` measures it) and it needs nothing beyond the standard
library; files are hashed in parallel threads (hashlib releases the GIL) with large reads. A size that
differs is reported before anything is read.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional, Sequence

ALGORITHM = "sha256"
BLOCK = 8 << 20  # bytes per read
THREADS = max(1, min(4, os.cpu_count() or 1))


def hash_file(path: Path) -> str:
    h = hashlib.new(ALGORITHM)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def files_of(root: Path, names: Iterable[str]) -> list[str]:
    """Every file of the outputs `names` under `root` (directories walked), relative to `root`, sorted."""
    found = []
    for name in names:
        path = root / name
        if path.is_dir():
            found += [p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file()]
        elif path.is_file():
            found.append(name)
        else:
            raise FileNotFoundError(f"{path}: a stage output that was not written")
    return sorted(found)


def _hash_all(root: Path, rels: Sequence[str]) -> list[str]:
    paths = [root / rel for rel in rels]
    if len(paths) <= 1:
        return [hash_file(p) for p in paths]
    with ThreadPoolExecutor(min(THREADS, len(paths))) as pool:
        return list(pool.map(hash_file, paths))


def digest_outputs(root: Path, names: Iterable[str]) -> dict:
    """The record of the outputs `names` under `root`: `{"algorithm": ..., "files": {path: [size, hex]}}`."""
    root = Path(root)
    rels = files_of(root, names)
    sizes = [(root / rel).stat().st_size for rel in rels]
    return {"algorithm": ALGORITHM,
            "files": {rel: [size, h] for rel, size, h in zip(rels, sizes, _hash_all(root, rels))}}


def total_bytes(record: dict) -> int:
    return sum(size for size, _ in record["files"].values())


def check(root: Path, record: dict, names: Iterable[str], shown: Optional[Path] = None) -> Optional[str]:
    """What is wrong with the outputs `names` under `root` against `record`, or None when they are exactly
    the files recorded: none missing, none added, every size and digest equal. Files are named relative to
    `shown` (default: `root`'s parent, so `iter_01/pairs.jsonl`)."""
    root, names = Path(root), list(names)
    shown = Path(shown) if shown is not None else root.parent

    def name(rel: str) -> str:
        return os.path.relpath(root / rel, shown)

    if record.get("algorithm") != ALGORITHM:
        return (f"{name(names[0] if names else '.')}: digests by {record.get('algorithm')!r}, "
                "which this version cannot check")
    expected = record["files"]
    present: list[str] = []
    for out in names:
        path = root / out
        if path.is_dir():
            present += [p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file()]
        elif path.is_file():
            present.append(out)
    present_set = set(present)
    for rel in sorted(expected):
        if rel not in present_set:
            return f"{name(rel)}: missing"
    for rel in sorted(present_set - set(expected)):
        return f"{name(rel)}: a file the stage did not write"
    for rel in sorted(expected):
        size = (root / rel).stat().st_size
        if size != expected[rel][0]:
            return f"{name(rel)}: {size} bytes, the stage wrote {expected[rel][0]}"
    rels = sorted(expected)
    for rel, h in zip(rels, _hash_all(root, rels)):
        if h != expected[rel][1]:
            return f"{name(rel)}: content differs from what the stage wrote ({ALGORITHM} mismatch)"
    return None


def without(record: dict, names: Iterable[str]) -> dict:
    """`record` less the files of the outputs `names` (checkpoints removed by `keep_checkpoints`)."""
    gone = tuple(names)
    return {**record, "files": {rel: v for rel, v in record["files"].items()
                                if not any(rel == n or rel.startswith(n + "/") for n in gone)}}
