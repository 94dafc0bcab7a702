"""Naming and shipping testbed pairs: the spec hash that names a built pair, the pair shipped with the package
(checked against the SHA-256 in its manifest) and `ship`, which puts a built pair there."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from thinkswitch.config import Role, TestbedSpec
from thinkswitch.errors import DataError
from thinkswitch.store.digests import hash_file
from thinkswitch.store.io import atomic_path

CODE_VERSION = "1"  # bump whenever a change to tokenizer.py or train.py alters the built weights
MANIFEST = "manifest.json"


def spec_hash(spec: TestbedSpec) -> str:
    """Short hash of the spec and the code version (names the cache directory)."""
    blob = json.dumps({"spec": asdict(spec), "code_version": CODE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


SHIPPED = Path(str(importlib.resources.files("thinkswitch.testbed") / "pair"))


def shipped_pair(spec: TestbedSpec, root: Path = SHIPPED) -> Path | None:
    """The pair shipped with the package (`thinkswitch/testbed/pair/`), when `spec` is the one it was built
    from; its files are checked against the manifest's SHA-256 first.

    Shipping the built pair (3.6 MB) makes the default testbed the same on every machine: training it again
    elsewhere converges to another pair (float differences between CPUs change what a few hundred steps of
    training reach), and so to other numbers. A spec that differs is built locally, as before.
    """
    if not (root / MANIFEST).is_file():
        return None
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("spec_hash") != spec_hash(spec):
        return None
    for name, digest in manifest["files"].items():
        if not (root / name).is_file() or hash_file(root / name) != digest:
            raise DataError(f"{root / name}: the shipped testbed pair is damaged (missing, or not the SHA-256 its "
                            f"manifest gives); reinstall thinkswitch, or build one with a changed model.testbed.* key")
    return root


def ship(built: Path, out: Path) -> None:
    """Copy a built pair into the package (`out`), with the SHA-256 of every file in its manifest."""
    manifest = json.loads((built / MANIFEST).read_text())
    with atomic_path(out) as tmp:
        for variant in Role:
            shutil.copytree(built / variant, tmp / variant)
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        manifest |= {"spec_hash": spec_hash(TestbedSpec(**manifest["spec"])),
                     "files": {name: hash_file(tmp / name) for name in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
