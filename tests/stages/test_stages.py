"""Each stage on the real libraries and the testbed pair: TRL, peft, bitsandbytes 4-bit, mergekit."""

import json
from pathlib import Path

import pytest
import torch

from tests.support.checkpoints import tensors
from tests.support.shared import compose
from tests.support.stage_inputs import stage_inputs
from thinkswitch.store.io import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


def merge(cfg, **given) -> dict:
    """The merge stage, its inputs from the composed `cfg` and `given` (checkpoints given by path)."""
    from thinkswitch.stages import merge as stage

    return stage.merge(stage_inputs(stage.MergeInputs, cfg, **given))


def distill(cfg, **given) -> dict:
    """The distill stage on the CPU, its inputs from the composed `cfg` and `given` (checkpoint and pairs by path)."""
    from thinkswitch.stages import distill as stage

    return stage.distill(stage_inputs(stage.DistillInputs, cfg, **given), device=torch.device("cpu"))


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_merge_endpoints_equal_the_parents(testbed_pair, tmp_path, t):

    cfg = compose([f"merge.t={t}"])
    out = tmp_path / "merged"
    merge(cfg, thinking=testbed_pair.thinking, instruct=testbed_pair.instruct, out=out)
    parent = testbed_pair.thinking if t == 0 else testbed_pair.instruct
    assert_same_tensors(tensors(out), tensors(parent))
    assert not list(out.glob("*.bin")), "safetensors only"


def test_merged_tensors_are_mergekits_own_slerp(testbed_pair, tmp_path):
    """A merged tensor equals mergekit's own `slerp` of the two parents' tensors at the configured t (mergekit
    interpolates each tensor as one vector)."""
    from mergekit.merge_methods.slerp import slerp


    cfg = compose(["merge.t=0.3"])
    merge(cfg, thinking=testbed_pair.thinking, instruct=testbed_pair.instruct, out=tmp_path / "m")
    merged, a, b = tensors(tmp_path / "m"), tensors(testbed_pair.thinking), tensors(testbed_pair.instruct)
    name = next(k for k in merged if "q_proj.weight" in k)
    expected = slerp(torch.tensor(0.3), a[name].reshape(1, -1), b[name].reshape(1, -1)).reshape(a[name].shape)
    assert torch.allclose(merged[name], expected, atol=1e-7)
    assert not torch.allclose(merged[name], a[name]) and not torch.allclose(merged[name], b[name])


def test_merge_keeps_the_thinking_models_files(testbed_pair, tmp_path):
    import yaml


    cfg = compose(["merge.t=[{filter:self_attn,value:[0.1,0.9]},{value:0.4}]"])
    out = tmp_path / "merged"
    merge(cfg, thinking=testbed_pair.thinking, instruct=testbed_pair.instruct, out=out)
    thinking = Path(testbed_pair.thinking)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (thinking / name).read_bytes(), name
    resolved = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert resolved["merge_method"] == "slerp"
    assert resolved["base_model"] == str(thinking.resolve())
    assert resolved["parameters"]["t"][0] == {"filter": "self_attn", "value": [0.1, 0.9]}
    merged, a, b = tensors(out), tensors(thinking), tensors(testbed_pair.instruct)
    differs = [k for k in merged if not torch.equal(merged[k], a[k]) and not torch.equal(merged[k], b[k])]
    assert differs, "an interior t must give weights different from both parents"
    assert not [k for k in merged if torch.isnan(merged[k]).any()]


def _pairs(tmp_path, n=24) -> Path:
    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples

    path = tmp_path / "pairs.jsonl"
    examples = task_examples(n, 7, "train", TestbedSpec())
    write_jsonl(path, [{"id": e["id"], "sample": 0, "prompt": e["prompt"], "completion": e["answer"]}
                       for e in examples])
    return path


@pytest.mark.parametrize("trainer", ["lora", "qlora"])
def test_distill_changes_instruct_weights(testbed_pair, tmp_path, trainer):

    cfg = compose([f"trainer={trainer}", "trainer.sft.num_train_epochs=1"])
    out, adapter = tmp_path / "instruct", tmp_path / "adapter"
    # imported up front, as run_experiment does: importing peft logs bitsandbytes' "no kernels" warning with
    # its exception, and pytest's log capture keeps that record, whose traceback would pin the importing frame
    import peft  # noqa: F401
    metrics = distill(cfg, instruct=testbed_pair.instruct, pairs=_pairs(tmp_path), seed=0, system_prompt=None,
                      adapter_out=adapter, model_out=out)
    assert metrics["train/pairs"] == 24 and metrics["train/steps"] >= 3
    assert metrics["train/quantized_4bit"] is (trainer == "qlora")
    assert (adapter / "adapter_model.safetensors").exists()
    before, after = tensors(testbed_pair.instruct), tensors(out)
    assert before.keys() == after.keys()  # a plain checkpoint: no LoRA or 4-bit tensors left
    assert all(v.dtype == torch.float32 for v in after.values())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("q_proj" in k for k in changed) and any("mlp" in k for k in changed)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert (out / "tokenizer.json").exists() and (out / "chat_template.jinja").exists()
    import gc

    from transformers import PreTrainedModel

    gc.collect()  # the stage leaves no model alive for the next one to load beside
    assert not [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
    if trainer == "lora":  # merged in place: the same weights as the saved adapter merged into a fresh base
        from peft import PeftModel

        from thinkswitch.engines.models import load_model

        base = load_model(testbed_pair.instruct, cfg.model, torch.device("cpu"))
        reference = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().state_dict()
        assert all(torch.allclose(after[k], reference[k], atol=1e-6) for k in after)


def test_distilled_and_merged_checkpoints_are_sharded(testbed_pair, tmp_path):
    """`shard_size` splits the checkpoints a run writes; mergekit reads the shards and writes shards."""
    from transformers import AutoModelForCausalLM


    cfg = compose(["trainer.sft.num_train_epochs=1", "merge.t=0.5"])
    out = tmp_path / "instruct"
    distill(cfg, instruct=testbed_pair.instruct, pairs=_pairs(tmp_path, 8), seed=0, system_prompt=None,
            adapter_out=tmp_path / "adapter", model_out=out, shard_size=200_000)
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (out / "model.safetensors.index.json").exists()
    merge(cfg, thinking=testbed_pair.thinking, instruct=str(out), out=tmp_path / "merged", shard_size=300_000)
    merged = sorted((tmp_path / "merged").glob("*.safetensors"))
    assert len(merged) >= 2 and all(f.stat().st_size < 600_000 for f in merged)
    weights = tensors(tmp_path / "merged")
    assert weights.keys() == tensors(testbed_pair.thinking).keys()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # transformers reads the sharded result
    assert all(torch.equal(p, weights[n]) for n, p in model.state_dict().items() if n in weights)


def test_generate_labels_writes_raw_outputs(testbed_pair, tmp_path):
    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.base import Generator
    from thinkswitch.stages.generate import GenerateInputs, generate_labels

    cfg = compose(["generation.batch_size=4"])
    examples = task_examples(6, 3, "train", TestbedSpec())
    generator = Generator(model=cfg.model, generation=cfg.generation, device=torch.device("cpu"))
    out = tmp_path / "generations.jsonl"
    metrics = generate_labels(stage_inputs(GenerateInputs, cfg, generator.device, checkpoint=testbed_pair.thinking,
                                           examples=examples, samples=2, system_prompt=None, seed=0, out=out),
                              generator=generator)
    rows = read_jsonl(out)
    assert metrics["generate/outputs"] == len(rows) == 12
    assert [r["id"] for r in rows[:2]] == [examples[0]["id"]] * 2 and [r["sample"] for r in rows[:2]] == [0, 1]
    assert sum("</think>" in r["output"] for r in rows) >= 10  # the thinking model closes its traces
    assert all("<|im_end|>" not in r["output"] and "answer" not in r for r in rows)  # labels never read here
