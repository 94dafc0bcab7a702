"""Ways to damage a stage's outputs on disk, for the tests that check nothing damaged is ever used: a stand-in
stage's outputs (`make_outputs`) and what happens to files (`CORRUPTIONS`: each with what the check must say)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def flip_a_byte(path: Path, offset: int = -9) -> None:
    """Change one byte in place (same size, same inode): what a bit flip or a careless edit does."""
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate(path: Path) -> None:
    """Cut the file in the middle of its last line."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


def make_outputs(root: Path) -> list[str]:
    (root / "ckpt").mkdir(parents=True)
    (root / "ckpt" / "model-00001-of-00002.safetensors").write_bytes(os.urandom(3000))
    (root / "ckpt" / "model-00002-of-00002.safetensors").write_bytes(os.urandom(2000))
    (root / "ckpt" / "config.json").write_text('{"a": 1}\n')
    (root / "pairs.jsonl").write_text("".join(json.dumps({"id": i, "completion": "x" * i}) + "\n" for i in range(20)))
    return ["pairs.jsonl", "ckpt"]


CORRUPTIONS = {
    "truncated line": (lambda r: truncate(r / "pairs.jsonl"), "pairs.jsonl: "),
    "flipped byte in a shard": (lambda r: flip_a_byte(r / "ckpt" / "model-00002-of-00002.safetensors"),
                                "model-00002-of-00002.safetensors: content differs"),
    "missing shard": (lambda r: (r / "ckpt" / "model-00001-of-00002.safetensors").unlink(),
                      "model-00001-of-00002.safetensors: missing"),
    "added file": (lambda r: (r / "ckpt" / "model.safetensors").write_bytes(b"x"),
                   "ckpt/model.safetensors: a file the stage did not write"),
    "rewritten config": (lambda r: (r / "ckpt" / "config.json").write_text('{"a": 2}\n'), "config.json: content"),
}
