"""Results kept as they are produced: a long stage that is killed resumes from its last finished batch.

Generation and evaluation append every finished batch to a partial file beside their output
(`generations.jsonl.partial`, `eval_<role>.jsonl.partial`), flushed and fsynced:

    {"partial": "thinkswitch", "key": "<digest of the stage's inputs>", "batching": {"batch_size": 64, ...}}
    {"index": 0, "output": "...", "tokens": 48, "stopped": true}
    {"index": 1, ...}

A rerun in the same run directory reads it back (`PartialResults.done`) and generates only what is
missing. The key is derived from the stage's inputs (`stages.inputs.stage_key(inputs, "partial")`: the
checkpoint, prompts, sampling, samples, seed, dtype, device type, backend, package version, RNG scheme),
not from how the stage batched: the batching the stage began with is in the header (`batching`), and the
stage finishes with it (`PartialResults.batching`), so that answers drawn per batch are those of an
uninterrupted run, whatever the memory plan of the rerun says. A line cut off by a kill (no newline, or
not JSON) and everything after it is dropped (the file is truncated there); a file whose header names
another key is never reused: it is deleted and the stage starts over. The stage writes its final output
atomically as before and then removes the partial file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)

HEADER = "thinkswitch"

# Called with (partial file, the batch's results by index) after a batch was appended and fsynced: a hook for
# tests (fault injection: a process killed between two batches; counting the batches a resumed run generates).
# Empty in real runs.
AFTER_BATCH: list[Callable[[Path, dict[int, dict]], None]] = []


def partial_path(out: Path) -> Path:
    """Where the results of `out` are kept while they are produced."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


class PartialResults:
    """The finished results of one output, by index, read back from (and appended to) its partial file."""

    def __init__(self, out: Path, key: str, batching: Optional[dict] = None):
        self.path, self.key = partial_path(out), key
        self.batching = batching  # how the results are batched: the header's, when a file is resumed
        self._file = None
        self.done: dict[int, dict] = self._load()

    def _load(self) -> dict[int, dict]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        done: dict[int, dict] = {}
        kept = 0  # bytes of whole, valid lines
        for lineno, raw in enumerate(data.split(b"\n")[:-1]):  # the piece after the last newline is torn or empty
            try:
                row = json.loads(raw)
            except ValueError:
                break
            if lineno == 0:
                if not isinstance(row, dict) or row.get("partial") != HEADER or row.get("key") != self.key:
                    log.info("%s was written with other settings; not reused", self.path.name)
                    self.path.unlink()
                    return {}
                self.batching = row.get("batching", self.batching)
            elif not isinstance(row, dict) or not isinstance(row.get("index"), int):
                break
            else:
                done[row.pop("index")] = row
            kept += len(raw) + 1
        if kept == 0:  # not even a whole header
            self.path.unlink()
            return {}
        if kept < len(data):
            log.info("%s: dropped %d bytes of an unfinished line", self.path.name, len(data) - kept)
            with open(self.path, "r+b") as f:
                f.truncate(kept)
        if done:
            log.info("%s: kept %d finished results of an earlier run; generating the rest", self.path.name,
                     len(done))
        return done

    def append(self, results: dict[int, dict]) -> None:
        """Add one finished batch, durably (flushed and fsynced) before returning."""
        if self._file is None:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
            if new:
                self._file.write(json.dumps({"partial": HEADER, "key": self.key, "batching": self.batching}) + "\n")
        self._file.write("".join(json.dumps({"index": i, **r}, ensure_ascii=False) + "\n"
                                 for i, r in sorted(results.items())))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.update(results)
        for hook in AFTER_BATCH:
            hook(self.path, results)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """The final output is written: the partial file is no longer needed."""
        self.close()
        self.path.unlink(missing_ok=True)


def generate_resumable(backend, prompts, sampling, *, seed: int, n: int, desc: str,
                       partial: Optional[PartialResults]) -> list[dict]:
    """`backend.generate`, keeping each finished batch in `partial` and skipping what it already holds. Every
    backend takes `on_batch` and `done` (`hf.GenerationBackend`): there is no backend that cannot resume."""
    if partial is None:
        return backend.generate(prompts, sampling, seed=seed, n=n, desc=desc)
    total = len(prompts) * n
    done = {i: r for i, r in partial.done.items() if 0 <= i < total}
    try:
        return backend.generate(prompts, sampling, seed=seed, n=n, desc=desc, on_batch=partial.append, done=done)
    finally:
        partial.close()
