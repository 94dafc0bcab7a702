"""What a stage's outputs depend on, and the keys derived from it.

Each stage takes one frozen dataclass of its inputs (`GenerateInputs`, `StripInputs`, `DistillInputs`,
`MergeInputs`, `EvaluateInputs`, in the stage modules). Its keys are computed from that object, never written
by hand: every field, recursively (config dataclasses whole), except a field whose metadata leaves it out of
some keys, with the reason (`outside`). Three keys:

- `cache`: the stage-cache key (a sweep's jobs share a stage whose key is the same);
- `partial`: the key of a partial-results file (`thinkswitch.store.partial`): a killed stage's finished
  answers are reused under it; the batching is not in it (the file records it, and a resume reuses it);
- `marker`: recorded in the stage's completion marker; a rerun redoes the stage when it differs (an input
  changed since), and so everything after it, whose inputs are its outputs.

An input produced by the run (a checkpoint, the pairs) is an `Artifact`: its `id` is the digest of its files
(`store.runner.output_id`), so a stage redone with other bytes changes the keys after it.

The same object says what the stage reads and writes: its `Artifact` fields are what it needs (`needs_of`), its
fields made with `output_path()` what it writes (`outputs_of`); the loop passes both to the stage runner.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from thinkswitch import __version__
from thinkswitch.config import ExperimentConfig, GenerationConfig
from thinkswitch.engines.seeds import RNG_SCHEME, rng_scheme
from thinkswitch.store.cache import checkpoint_id, digest, file_digest

PURPOSES = ("cache", "partial", "marker")
KEY_SCHEME = "stage-inputs-v1"  # part of every key: a change in how keys are derived starts new ones


def outside(*purposes: str, why: str, metadata: Optional[dict] = None, **kwargs) -> Any:
    """A dataclass field left out of the keys `purposes` (all of them when none is named), with the reason."""
    unknown = set(purposes) - set(PURPOSES)
    if unknown:
        raise ValueError(f"unknown key purposes {sorted(unknown)}; known: {PURPOSES}")
    return field(metadata={"outside": purposes or PURPOSES, "why": why, **(metadata or {})}, **kwargs)


def keyed_as(transform, why: str, **kwargs) -> Any:
    """A dataclass field that enters every key as `transform(value)` (a part of it that does not affect outputs
    is left out), with the reason."""
    return field(metadata={"as": transform, "why": why}, **kwargs)


def key_value(value: Any, purpose: str) -> Any:
    """`value` as it enters a key for `purpose`: dataclasses field by field (fields outside it left out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            if purpose in f.metadata.get("outside", ()):
                continue
            v = getattr(value, f.name)
            out[f.name] = key_value(f.metadata["as"](v) if "as" in f.metadata else v, purpose)
        return out
    if isinstance(value, dict):
        return {str(k): key_value(v, purpose) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [key_value(v, purpose) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def stage_key(inputs: Any, purpose: str = "cache") -> str:
    """The key of a stage's `inputs` (a frozen dataclass) for `purpose` (see the module's docstring)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}; known: {PURPOSES}")
    return digest(KEY_SCHEME, type(inputs).__name__, key_value(inputs, purpose))


@dataclass(frozen=True)
class Artifact:
    """A checkpoint or file a stage reads: where it is, and what it is (keys build on `id`)."""

    path: str = outside(why="where the files are; `id` names what they hold (a starting checkpoint's id includes "
                            "its resolved path)")
    id: str

    @classmethod
    def at(cls, ref: str | Path, revision: Optional[str] = None) -> "Artifact":
        """A checkpoint or file the run did not produce: a local directory (named by its files' names, sizes and
        times: `store.cache.checkpoint_id`), a local file (its SHA-256) or a hub id (with its revision)."""
        path = Path(ref).expanduser()
        return cls(str(ref), file_digest(path) if path.is_file() else checkpoint_id(str(ref), revision))


@dataclass(frozen=True)
class Numerics:
    """What changes the numbers a model computes, besides its weights and inputs."""

    device_type: str  # cpu | cuda | mps
    dtype: str  # model.dtype as configured (auto resolves by device)
    version: str = outside("marker", why="an upgrade of thinkswitch does not redo a finished run's stages; the "
                                         "stage cache and partial files are keyed by it", default=__version__)

    @classmethod
    def of(cls, cfg: ExperimentConfig, device) -> "Numerics":
        return cls(device_type=getattr(device, "type", str(device)), dtype=cfg.model.dtype)


@dataclass(frozen=True)
class Engine:
    """The generation engine's settings that change what it generates."""

    numerics: Numerics
    backend: str  # generation.backend
    batch_size: int = outside("partial", why="batching: a partial file records the batching it was written "
                                             "with, and a resume reuses it")
    vllm: Optional[dict] = None  # backend=vllm: its EngineArgs (generation.vllm); None for the HF backend
    quantization: str = "none"  # generation.quantization: the weights generate in NF4 or as loaded
    rng: str = RNG_SCHEME  # how random numbers are drawn (engines.seeds.rng_scheme)

    @classmethod
    def of(cls, cfg: ExperimentConfig, device, generation: Optional[GenerationConfig] = None) -> "Engine":
        """The engine `generation` (default: `cfg.generation`; the run passes it with `auto` resolved) runs."""
        generation = generation or cfg.generation
        backend = str(generation.backend)
        vllm = dict(generation.vllm) if backend == "vllm" else None
        return cls(numerics=Numerics.of(cfg, device), backend=backend, batch_size=generation.batch_size,
                   vllm=vllm, quantization=str(generation.quantization), rng=rng_scheme(backend))


def output_path(why: str = "where the stage writes; not what it computes") -> Any:
    """A field naming where a stage writes (outside every key): one of the stage's outputs (`outputs_of`)."""
    return outside(why=why, metadata={"output": True})


def outputs_of(inputs: Any) -> list[Path]:
    """What the stage of `inputs` writes: its fields made with `output_path()`, in order (the runner digests and
    marks them)."""
    return [getattr(inputs, f.name) for f in dataclasses.fields(inputs) if f.metadata.get("output")]


def needs_of(inputs: Any) -> list[str]:
    """What the stage of `inputs` reads from disk: its `Artifact` fields' paths (the runner checks that the run's
    own are there before it runs)."""
    return [value.path for f in dataclasses.fields(inputs) if isinstance(value := getattr(inputs, f.name), Artifact)]
