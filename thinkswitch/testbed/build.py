"""Built-in default model pair: a tiny Qwen3 thinking/instruct twin, the shipped one or built once and cached.

`build_testbed` returns the pair of a spec; `python -m thinkswitch.testbed.build --out DIR [--ship]` builds the
default one (and ships it). The parts: `tokenizer`, `train` (the task's formats and the training),
`evaluation` (the held-out score in the manifest), `shipping` (spec hash, the shipped pair).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from thinkswitch.config import TestbedSpec
from thinkswitch.store.io import atomic_path
from thinkswitch.store.locks import HolderLock
from thinkswitch.testbed.evaluation import EVAL_N, EVAL_SEED, evaluate_testbed
from thinkswitch.testbed.shipping import CODE_VERSION, MANIFEST, SHIPPED, ship, shipped_pair, spec_hash
from thinkswitch.testbed.train import train_variants

logger = logging.getLogger(__name__)


def _complete(path: Path) -> bool:
    return (path / MANIFEST).is_file()


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
            train_variants(spec, tmp)
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
