"""Checkpoints as files, for the tests: fake ones (a valid safetensors header over zeros, a config, a tokenizer file:
enough for the checks made before any model loads), and the tensors a real one holds."""

from __future__ import annotations

import json
import math
from pathlib import Path

TENSORS = {"embed.weight": [16, 8], "layer.0.weight": [8, 8]}


def write_safetensors(path, tensors=None):
    """A valid safetensors file of zeros (F32): 8 bytes of header length, the JSON header, the data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in (tensors or TENSORS).items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(offset))


def fake_checkpoint(path, tensors=None, **config):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64,
                                                  "num_hidden_layers": 2, "num_attention_heads": 4, **config}))
    write_safetensors(path / "model.safetensors", tensors)
    (path / "tokenizer.json").write_text("{}")
    return str(path)


def sharded_checkpoint(path):
    """Two shards and their index, as the run writes checkpoints."""
    ckpt = fake_checkpoint(path)
    (path / "model.safetensors").unlink()
    write_safetensors(path / "model-00001-of-00002.safetensors", {"embed.weight": [16, 8]})
    write_safetensors(path / "model-00002-of-00002.safetensors", {"layer.0.weight": [8, 8]})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "embed.weight": "model-00001-of-00002.safetensors", "layer.0.weight": "model-00002-of-00002.safetensors"}}))
    return ckpt


def tensors(path) -> dict:
    """Every tensor of a checkpoint directory's safetensors files, by name."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out |= load_file(f)
    return out
