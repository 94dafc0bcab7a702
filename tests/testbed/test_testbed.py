"""The built-in testbed: the default pair ships with the package (the same on every machine); another spec builds."""

import json
import re
import shutil

import pytest

from tests.support.paths import ROOT
from tests.support.shared import compose
from thinkswitch.config import TestbedSpec
from thinkswitch.errors import DataError
from thinkswitch.testbed.build import build_testbed
from thinkswitch.testbed.shipping import MANIFEST, SHIPPED, shipped_pair, spec_hash


def test_the_default_spec_is_the_shipped_pair(tmp_path):
    assert shipped_pair(TestbedSpec()) == SHIPPED
    assert build_testbed(compose().model.testbed, tmp_path) == SHIPPED
    assert not list(tmp_path.iterdir()), "nothing built"
    manifest = json.loads((SHIPPED / MANIFEST).read_text())
    assert manifest["spec_hash"] == spec_hash(TestbedSpec())
    assert {"instruct/model.safetensors", "thinking/model.safetensors"} <= set(manifest["files"])


def test_another_spec_is_not_the_shipped_pair():
    assert shipped_pair(TestbedSpec(instruct_steps=99)) is None


@pytest.mark.parametrize("damage", ["flip", "remove"])
def test_a_damaged_shipped_pair_is_refused_naming_the_file(tmp_path, damage):
    copy = tmp_path / "testbed_pair"
    shutil.copytree(SHIPPED, copy)
    weights = copy / "thinking" / "model.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    with pytest.raises(DataError, match=r"thinking/model\.safetensors: the shipped testbed pair is damaged"):
        shipped_pair(TestbedSpec(), copy)


@pytest.mark.slow
def test_another_spec_is_built_cached_and_evaluated(tmp_path):
    spec = TestbedSpec(base_steps=3, thinking_steps=2, instruct_steps=2, warmup_steps=1)
    path = build_testbed(spec, tmp_path)
    assert path.parent == tmp_path and path.name == f"testbed-{spec_hash(spec)}"
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["spec"]["base_steps"] == 3 and set(manifest["eval"]) >= {"instruct", "thinking"}
    assert (path / "instruct" / "model.safetensors").exists() and (path / "thinking" / "chat_template.jinja").exists()
    assert build_testbed(spec, tmp_path) == path  # cached: the second call builds nothing
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_the_readme_shows_the_demos_iteration_0(testbed_pair, tmp_path):
    """The README's demo table starts with what the default experiment's baseline evaluation gives here."""
    from thinkswitch.analysis.console import score
    from thinkswitch.config import Role
    from thinkswitch.loop import eval_seed
    from thinkswitch.setup import prepare
    from thinkswitch.stages.evaluate import EvaluateInputs, evaluate

    cfg = compose(["stage_cache=null"], run_dir=str(tmp_path))
    run = prepare(cfg)
    row = {"iteration": 0}
    for role in Role:
        row |= evaluate(EvaluateInputs(
            checkpoint=getattr(run.start, role), role=role, examples=tuple(run.eval), grader=cfg.domain.grader,
            sampling=getattr(cfg.model.sampling, role), samples=1, system_prompt=None, seed=eval_seed(cfg),
            engine=run.engine, out=tmp_path / f"{role}.jsonl"), generator=run.generator)
    table = (ROOT / "README.md").read_text().split("<!-- demo-table -->")[1]
    first = next(line for line in table.splitlines() if re.match(r"\s+0 \|", line))
    assert score(row, "instruct") in first and score(row, "thinking") in first, (first, row)
