"""Stage keys are derived from the stages' inputs: every field of every stage's inputs, changed in turn, changes each
key (stage cache, partial file, marker), unless the field is marked as outside that key, with the reason."""

import dataclasses
import inspect
from pathlib import Path

import pytest

from tests.support.shared import compose
from tests.support.stage_inputs import stage_inputs
from thinkswitch.config import DistillConfig, MergeConfig, ModelConfig, SamplingConfig, TrainerConfig
from thinkswitch.stages import answer, distill, evaluate, generate, merge, strip
from thinkswitch.stages.inputs import PURPOSES, Artifact, Engine, Numerics, stage_key

ENGINE = Engine(numerics=Numerics(device_type="cpu", dtype="auto"), backend="hf", batch_size=8)
EXAMPLES = ({"id": "a", "prompt": "1+2", "answer": "3"}, {"id": "b", "prompt": "2+2", "answer": "4"})
SAMPLING = SamplingConfig(do_sample=True, temperature=0.7, max_new_tokens=32)


CFG = compose()  # the default config: the fields no test below states come from it, as the loop takes them


def inputs(kind, **given):
    """`kind` on the default config, its checkpoints and files named by hand (no file is read)."""
    common = dict(engine=ENGINE, numerics=ENGINE.numerics, grader="last_integer", system_prompt="Be brief.")
    fields = {f.name for f in dataclasses.fields(kind)}
    return stage_inputs(kind, CFG, **{k: v for k, v in common.items() if k in fields and k not in given}, **given)


def evaluate_inputs(role: str) -> evaluate.EvaluateInputs:
    return inputs(evaluate.EvaluateInputs, checkpoint=Artifact(f"/ckpt/{role}", f"id-{role}"), role=role,
                  examples=EXAMPLES, sampling=SAMPLING, samples=2, seed=2, out=Path(f"/run/iter_01/eval_{role}.jsonl"))


BASES = {
    generate.GenerateInputs: inputs(generate.GenerateInputs, checkpoint=Artifact("/ckpt/thinking", "id-thinking"),
                                    examples=EXAMPLES, sampling=SAMPLING, samples=2, seed=10,
                                    out=Path("/run/iter_01/generations.jsonl")),
    strip.StripInputs: inputs(strip.StripInputs, generations=Artifact("/run/iter_01/generations.jsonl", "id-gens"),
                              cfg=DistillConfig(), pairs=Path("/run/pairs.jsonl")),
    strip.GoldInputs: inputs(strip.GoldInputs, generations=Artifact("/run/iter_01/generations.jsonl", "id-gens"),
                             examples=EXAMPLES, cfg=DistillConfig(), pairs=Path("/run/pairs.jsonl")),
    distill.DistillInputs: inputs(
        distill.DistillInputs, instruct=Artifact("/ckpt/instruct", "id-instruct"),
        pairs=Artifact("/run/pairs.jsonl", "id-pairs"),
        trainer=TrainerConfig(name="lora", sft={"learning_rate": 1e-4, "save_steps": 5}, lora={"r": 8}),
        model=ModelConfig(name="pair"), seed=11, system_prompt=None, shard_size=1 << 30,
        adapter_out=Path("/run/adapter"), model_out=Path("/run/instruct")),
    merge.MergeInputs: inputs(merge.MergeInputs, thinking=Artifact("/ckpt/thinking", "id-thinking"),
                              instruct=Artifact("/run/instruct", "id-new"), cfg=MergeConfig(t=0.3),
                              shard_size=1 << 30, out=Path("/run/thinking")),
    evaluate.EvaluateInputs: evaluate_inputs("thinking"),
}

# Parts of a field entering the keys through a transform (`inputs.keyed_as`), left out on purpose: the trainer's
# name (a label of the preset; its settings are what is keyed) and when checkpoints are written.
TRANSFORMED_AWAY = {"trainer.name", "trainer.checkpoint_minutes", "trainer.sft.save_steps"}


def changed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, Path):
        return value.with_name(value.name + "x")
    if isinstance(value, tuple):
        return value[:-1] + ({**value[-1], "prompt": "other"},)
    if isinstance(value, dict):
        return {**value, "extra": 1}
    return 1  # None: now set


def variants(obj, prefix=""):
    """(field path, purposes it is outside of, obj with that field changed), for every field, nested ones included."""
    for f in dataclasses.fields(obj):
        outside = set(f.metadata.get("outside", ()))
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            for path, inner, new in variants(value, f"{prefix}{f.name}."):
                yield path, outside | inner, dataclasses.replace(obj, **{f.name: new})
            continue
        yield f"{prefix}{f.name}", outside, dataclasses.replace(obj, **{f.name: changed(value)})
        if isinstance(value, dict):
            for k, v in value.items():
                yield (f"{prefix}{f.name}.{k}", outside,
                       dataclasses.replace(obj, **{f.name: {**value, k: changed(v)}}))


def stage_input_classes():
    return {obj for module in (generate, strip, distill, merge, evaluate) for _, obj in inspect.getmembers(module)
            if dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__ and obj.__name__.endswith("Inputs")}


def test_every_stage_input_class_is_covered():
    assert stage_input_classes() == set(BASES)


@pytest.mark.parametrize("kind", sorted(BASES, key=lambda k: k.__name__), ids=lambda k: k.__name__)
def test_each_field_changes_each_key_unless_marked(kind):
    base = BASES[kind]
    keys = {p: stage_key(base, p) for p in PURPOSES}
    unmarked_misses = []
    for path, outside, new in variants(base):
        for purpose in PURPOSES:
            same = stage_key(new, purpose) == keys[purpose]
            if purpose in outside:
                assert same, f"{kind.__name__}.{path} is marked outside the {purpose} key but changes it"
            elif same:
                unmarked_misses.append(path)
    assert set(unmarked_misses) <= TRANSFORMED_AWAY, f"{kind.__name__}: in no key and not marked: {unmarked_misses}"


def test_marked_fields_say_why():
    def marked(kind):
        for f in dataclasses.fields(kind):
            if "outside" in f.metadata or "as" in f.metadata:
                yield f
            if dataclasses.is_dataclass(f.type) if not isinstance(f.type, str) else False:
                yield from marked(f.type)

    fields = [f for kind in [*BASES, Engine, Numerics, Artifact] for f in marked(kind)]
    assert fields and all(len(f.metadata["why"]) > 20 for f in fields)


def test_what_is_outside_which_key():
    """The decisions the keys encode: batching is recorded in a partial file, not keyed by it; an upgrade does not
    redo a finished run's stages; where files go and how they are sharded are in no key."""
    engine = {f.name: set(f.metadata.get("outside", ())) for f in dataclasses.fields(Engine)}
    assert engine["batch_size"] == {"partial"} and not engine["backend"] and not engine["rng"]
    assert {f.name: set(f.metadata.get("outside", ())) for f in dataclasses.fields(Numerics)}["version"] == {"marker"}
    assert set(dataclasses.fields(Artifact)[0].metadata["outside"]) == set(PURPOSES)  # path; the id is keyed
    for kind, names in {merge.MergeInputs: ("out", "shard_size"), generate.GenerateInputs: ("out",),
                        distill.DistillInputs: ("adapter_out", "model_out", "shard_size", "model")}.items():
        fields = {f.name: f for f in dataclasses.fields(kind)}
        assert all(set(fields[n].metadata["outside"]) == set(PURPOSES) for n in names), kind.__name__


def test_the_trainers_checkpoint_schedule_is_outside_and_its_training_settings_inside():
    base = BASES[distill.DistillInputs]
    trainer = base.trainer
    later = dataclasses.replace(base, trainer=dataclasses.replace(
        trainer, checkpoint_minutes=1.0, sft={**trainer.sft, "save_steps": 99, "save_total_limit": 3}))
    assert stage_key(later) == stage_key(base)
    faster = dataclasses.replace(base, trainer=dataclasses.replace(trainer, sft={**trainer.sft, "learning_rate": 1}))
    assert stage_key(faster) != stage_key(base)


def test_vllm_options_are_keyed_only_for_the_vllm_backend():
    vllm = dataclasses.replace(ENGINE, backend="vllm", vllm={"enforce_eager": True})
    other = dataclasses.replace(vllm, vllm={"enforce_eager": False})
    assert stage_key(BASES[generate.GenerateInputs]) != stage_key(dataclasses.replace(BASES[generate.GenerateInputs],
                                                                                      engine=vllm))
    assert stage_key(vllm) != stage_key(other)


def test_keys_are_stable_and_purposes_checked():
    base = BASES[generate.GenerateInputs]
    again = dataclasses.replace(base, examples=tuple(dict(e) for e in EXAMPLES))
    assert stage_key(base) == stage_key(again) and len({stage_key(base, p) for p in PURPOSES}) == 3
    with pytest.raises(ValueError, match="purpose"):
        stage_key(base, "everything")


def test_a_partial_file_is_finished_with_the_batching_it_was_begun_with(tmp_path):
    """The partial key leaves the batching out; the file records it and a resume reuses it (another memory plan)."""
    import torch

    from thinkswitch.config import GenerationConfig
    from thinkswitch.engines.base import Generator
    from thinkswitch.store.partial import PartialResults

    inputs = dataclasses.replace(BASES[generate.GenerateInputs], out=tmp_path / "generations.jsonl")
    begun = Generator(model=ModelConfig(name="pair"), generation=GenerationConfig(batch_size=8, vllm={}),
                      device=torch.device("cpu"), token_budget=616)
    partial, same = answer.resumable(begun, inputs.out, inputs)
    assert same is begun
    partial.append({0: {"output": "a", "tokens": 1}})
    partial.close()

    now = dataclasses.replace(begun, token_budget=4_327_168)  # this start's plan: more free memory
    partial, finishing = answer.resumable(now, inputs.out, inputs)
    assert partial.done == {0: {"output": "a", "tokens": 1}}
    assert (finishing.token_budget, finishing.generation.batch_size) == (616, 8)

    other = dataclasses.replace(inputs, seed=inputs.seed + 1)  # another key: the file is not reused
    partial, unchanged = answer.resumable(now, other.out, other)
    assert partial.done == {} and unchanged is now
    assert PartialResults(inputs.out, stage_key(inputs, "partial")).done == {}


def test_inputs_say_what_their_stage_reads_and_writes():
    """The runner's `needs` are the Artifact fields' paths, its `outputs` the `output_path()` fields, in order."""
    from thinkswitch.stages.inputs import needs_of, outputs_of

    trained = BASES[distill.DistillInputs]
    assert needs_of(trained) == ["/ckpt/instruct", "/run/pairs.jsonl"]
    assert outputs_of(trained) == [Path("/run/adapter"), Path("/run/instruct")]
    gold = BASES[strip.GoldInputs]  # the oracle filters the thinking model's own generations
    assert needs_of(gold) == ["/run/iter_01/generations.jsonl"] and outputs_of(gold) == [Path("/run/pairs.jsonl")]
    assert needs_of(BASES[merge.MergeInputs]) == ["/ckpt/thinking", "/run/instruct"]
    for kind, inputs in BASES.items():
        assert outputs_of(inputs), f"{kind.__name__} names what its stage writes"
        assert all(stage_key(inputs) == stage_key(dataclasses.replace(inputs, **{f.name: Path("/elsewhere")}))
                   for f in dataclasses.fields(inputs) if f.metadata.get("output")), "outputs are outside the keys"
