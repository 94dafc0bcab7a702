"""The real path rehearsed offline: the paper's presets on hub ids, from a Hugging Face cache holding them.

A temporary HF_HOME (`hubcache.build_hub_cache`) holds the tiny 2507-convention pair under the paper's model ids
and the domains' datasets under their hub ids with the hub's field names; runs see HF_HUB_OFFLINE=1 and nothing
else differs from a user's run: only token budgets, sizes (and, for the tiny pair, merge.t) are shrunk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support import cli
from tests.support.hubcache import INSTRUCT, THINKING, aime_rows, build_hub_cache, offline_env, put_repo
from tests.support.paths import ROOT, SHARED_DATA
from tests.support.shared import compose, made_once
from tests.support.tinypair import ANSWER
from thinkswitch.errors import ConfigError, DataError
from thinkswitch.store.cache import checkpoint_id
from thinkswitch.store.io import read_json, read_jsonl

SMALL = ["model.sampling.thinking.max_new_tokens=24", "model.sampling.instruct.max_new_tokens=8",
         "trainer.sft.num_train_epochs=1", "tracking.mode=disabled"]


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """An empty hub cache this process's huggingface_hub reads (offline, as conftest set it)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert constants.HF_HUB_OFFLINE
    return tmp_path / "hub"


def pair_in(hub: Path, pair) -> None:
    for repo, path in ((INSTRUCT, pair.instruct), (THINKING, pair.thinking)):
        put_repo(hub, repo, {f.name: f.read_bytes() for f in Path(path).iterdir() if f.is_file()})


def paper_model(*extra: str):
    return compose(["experiment=paper_aime", *extra]).model


def test_hub_ids_resolve_once_to_their_snapshots_and_keep_their_keys(hub, testbed_pair):
    from thinkswitch.setup import resolve_pair, start_pair

    pair_in(hub, testbed_pair)
    cfg = paper_model()
    pair = resolve_pair(cfg, Path("/unused"))
    assert Path(pair.thinking) == next((hub / "models--Qwen--Qwen3-4B-Thinking-2507" / "snapshots").iterdir())
    assert (Path(pair.instruct) / "config.json").is_file() and "Instruct" in pair.instruct
    start = start_pair(cfg, pair)
    assert start.thinking.path == pair.thinking
    assert start.thinking.id == checkpoint_id(THINKING, None)  # where the cache is does not change a stage key
    assert start.instruct.id == checkpoint_id(INSTRUCT, None) != start.thinking.id
    for repo in hub.glob("models--*"):  # a tag both repos have: model.revision is the pair's
        (repo / "refs" / "v1").write_text((repo / "refs" / "main").read_text())
    tagged = paper_model("model.revision=v1")
    pinned = resolve_pair(tagged, Path("/unused"))
    assert pinned == pair
    assert start_pair(tagged, pinned).thinking.id == checkpoint_id(THINKING, "v1") != start.thinking.id


def test_a_model_missing_offline_is_one_line_naming_it_and_the_download(hub, testbed_pair):
    from thinkswitch.setup import resolve_pair

    with pytest.raises(ConfigError, match=r"^model\.instruct: model Qwen/Qwen3-4B-Instruct-2507 is not in the "
                                          r"Hugging Face cache \(.*/hub\) and the hub is offline \(HF_HUB_OFFLINE=1\); "
                                          r"download it once .*: hf download Qwen/Qwen3-4B-Instruct-2507 --include "
                                          r"'\*\.json' '\*\.safetensors'") as caught:
        resolve_pair(paper_model(), Path("/unused"))
    assert "\n" not in str(caught.value)
    pair_in(hub, testbed_pair)
    with pytest.raises(ConfigError, match=r"^model\.instruct: model Qwen/Qwen3-4B-Instruct-2507 \(revision v9\) is not "
                                          r".*hf download Qwen/Qwen3-4B-Instruct-2507 --revision v9 --include"):
        resolve_pair(paper_model("model.revision=v9"), Path("/unused"))


def test_datasets_resolve_to_their_config_split_with_the_hub_fields(hub, tmp_path):
    from tests.support.hubcache import PARQUET, PUBMEDQA_CARD, parquet, pubmedqa_rows
    from thinkswitch.data.sources import load_hf

    with pytest.raises(DataError, match=r"^domain\.eval\.dataset: dataset 'qiaojin/PubMedQA' \(config 'pqa_labeled', "
                                        r"split 'train'\) is not in the Hugging Face cache .*: hf download "
                                        r"qiaojin/PubMedQA --repo-type dataset$"):
        load_hf("qiaojin/PubMedQA", "pqa_labeled", "train", key="domain.eval.dataset")
    labeled, unlabeled = pubmedqa_rows(SHARED_DATA / "pubmedqa")
    put_repo(hub, "qiaojin/PubMedQA", {"README.md": PUBMEDQA_CARD.encode(), f"pqa_labeled/{PARQUET}": parquet(labeled)},
             kind="datasets")
    rows = load_hf("qiaojin/PubMedQA", "pqa_labeled", "train")
    assert len(rows) == 500 and set(rows[0]) >= {"pubid", "question", "context", "final_decision"}
    assert isinstance(rows[0]["context"]["contexts"], list)
    with pytest.raises(DataError, match=r"no config 'pqa_other'; the dataset has \['pqa_artificial', 'pqa_labeled', "
                                        r"'pqa_unlabeled'\]"):
        load_hf("qiaojin/PubMedQA", "pqa_other", "train")
    with pytest.raises(DataError, match=r"config 'pqa_labeled' has no split 'test'; it has \['train'\]"):
        load_hf("qiaojin/PubMedQA", "pqa_labeled", "test")
    with pytest.raises(DataError, match=r"\(config 'pqa_unlabeled', split 'train'\) is not in the Hugging Face cache "
                                        r".*hf download qiaojin/PubMedQA --repo-type dataset --include README\.md "
                                        r"'pqa_unlabeled/train-\*'"):  # the card is there: exactly what is missing
        load_hf("qiaojin/PubMedQA", "pqa_unlabeled", "train")


def test_the_merge_stage_takes_local_directories_only(testbed_pair, tmp_path):
    from thinkswitch.errors import StageError
    from thinkswitch.stages.inputs import Artifact
    from thinkswitch.stages.merge import MergeInputs, merge

    cfg = compose(["experiment=paper_aime"]).merge
    with pytest.raises(StageError, match=r"^merge: the thinking checkpoint Qwen/Qwen3-4B-Thinking-2507 is not a local "
                                         r"directory$"):
        merge(MergeInputs(thinking=Artifact(THINKING, "id"), instruct=Artifact.at(testbed_pair.instruct), cfg=cfg,
                          shard_size=1 << 30, out=tmp_path / "merged"))
    assert not (tmp_path / "merged").exists()


@pytest.fixture(scope="module")
def hub_home(tiny_2507_pair, tmp_path_factory) -> Path:
    """The offline cache of the paper's ids (once per session)."""
    instruct, thinking = tiny_2507_pair
    return made_once(tmp_path_factory, "hubhome", lambda path: build_hub_cache(path, instruct, thinking, SHARED_DATA))


def jobs(sweep: Path) -> dict[str, Path]:
    """A method sweep's run directories by method (each one directory under the sweep, a path in its overrides too)."""
    return {yaml.safe_load((d / "run_config.yaml").read_text())["method"]["name"]: d
            for d in sweep.iterdir() if d.is_dir()}


@pytest.mark.slow
def test_the_paper_presets_run_an_iteration_offline_on_the_hub_text(hub_home, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli.thinkswitch("--multirun", "experiment=paper_aime,paper_pubmedqa", "iterations=1", "domain.eval_size=8",
                           "domain.train_prompts=4", *SMALL, f"hydra.sweep.dir={sweep}", env=offline_env(hub_home),
                           timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert len(runs) == 2
    start = next((hub_home / "hub" / "models--Qwen--Qwen3-4B-Thinking-2507" / "snapshots").iterdir())
    for run, template in zip(runs, ["within \\boxed{}.", "Answer the question with yes, no or maybe."]):
        summary = read_json(run / "summary.json")
        assert summary["final"]["instruct/n"] == summary["final"]["thinking/n"] == 8
        for evals in ("iter_00/eval_thinking.jsonl", "iter_01/generations.jsonl"):
            rows = read_jsonl(run / evals)
            assert all(template in r["prompt"] and "{{" not in r["prompt"] for r in rows), evals
        assert "model.thinking: Qwen/Qwen3-4B-Thinking-2507 -> " in (run / "thinkswitch.log").read_text()
        pairs = read_jsonl(run / "iter_01" / "pairs.jsonl")  # QLoRA (the presets' trainer) on answers only
        assert pairs and not any("<think>" in p["completion"] or "</think>" in p["completion"] for p in pairs)
        thinking = read_jsonl(run / "iter_01" / "eval_thinking.jsonl")
        assert all(r["output"].count("</think>") <= 1 and "<think>" not in r["output"] for r in thinking)
        # merge.base=current (the presets' own) at iteration 1: the snapshot of the hub id
        assert f"base_model: {start}" in (run / "iter_01" / "thinking" / "mergekit.yaml").read_text()
    aime = read_jsonl(runs[0] / "iter_00" / "eval_instruct.jsonl")
    assert {r["gold"] for r in aime} <= {str(n) for n in range(1000)}
    assert not (ROOT / "Qwen").exists()
    shutil.rmtree(sweep)  # checkpoints: not kept past the test


@pytest.mark.slow
def test_every_method_merges_on_hub_ids_over_two_iterations_from_the_initial_base(hub_home, tmp_path):
    sweep = tmp_path / "sweep"
    # the training prompts: three AIME 2025 problems (an id list, as a user names an official split), one of them
    # the problem whose gold is 70, the tiny pair's answer: gold_oracle (the thinking model's correct answers
    # only) has exactly that one to distil
    golds = {str(r["problem_idx"]): str(r["answer"]) for r in aime_rows(SHARED_DATA / "aime" / "aime25.jsonl")}
    assert list(golds.values()).count(ANSWER) == 1
    train = [i for i, gold in golds.items() if gold == ANSWER] + [i for i, g in golds.items() if g != ANSWER][:2]
    (tmp_path / "train_ids.json").write_text(json.dumps([int(i) for i in train]))
    proc = cli.thinkswitch("--multirun", "experiment=paper_aime",
                           "method=thinkswitch,merge_only,distill_only,gold_oracle", "merge.base=initial",
                           "merge.t=0.05", "iterations=2", f"domain.train.include_ids={tmp_path / 'train_ids.json'}",
                           "domain.train_prompts=3", "domain.eval_size=2", *SMALL, f"hydra.sweep.dir={sweep}",
                           env=offline_env(hub_home), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = jobs(sweep)
    assert sorted(runs) == ["distill_only", "gold_oracle", "merge_only", "thinkswitch"]
    snapshots = hub_home / "hub" / "models--Qwen--Qwen3-4B-Thinking-2507" / "snapshots"
    start = next(snapshots.iterdir())
    for method, run in runs.items():
        assert [h["iteration"] for h in read_json(run / "summary.json")["history"]] == [0, 1, 2], method
        for it in (run / "iter_01", run / "iter_02"):  # what each method does, through the same loop
            assert (it / "generations.jsonl").exists() == (method != "merge_only"), (method, it.name)
        last = run / "iter_02"  # the checkpoints it changed (keep_checkpoints=last, the preset's)
        assert (last / "instruct").is_dir() == (method != "merge_only"), method
        assert (last / "thinking").is_dir() == (method != "distill_only"), method
        if method == "distill_only":
            continue
        merged = run / "iter_02" / "thinking"
        mergekit = (merged / "mergekit.yaml").read_text()
        assert f"base_model: {start}" in mergekit, mergekit  # merge.base=initial: the snapshot, not <cwd>/Qwen/...
        for name in ("chat_template.jinja", "generation_config.json", "tokenizer_config.json"):
            assert (merged / name).read_bytes() == (start / name).read_bytes(), (method, name)
    for iteration in ("iter_01", "iter_02"):
        drawn = {str(r["id"]) for r in read_jsonl(runs["gold_oracle"] / iteration / "generations.jsonl")}
        pairs = read_jsonl(runs["gold_oracle"] / iteration / "pairs.jsonl")
        assert drawn == set(train), "the training prompts are the listed problems"
        assert pairs and {golds[str(p["id"])] for p in pairs} == {ANSWER}, "only the correct labels are distilled"
        assert len(read_jsonl(runs["thinkswitch"] / iteration / "pairs.jsonl")) > len(pairs), "the method's: all"
    assert not (ROOT / "Qwen").exists()
    shutil.rmtree(sweep)  # checkpoints: not kept past the test


@pytest.mark.parametrize("card, config, split, patterns", [
    ("- config_name: only\n  data_files: data/*.parquet", None, "train", ["data/*.parquet"]),
    ("- config_name: a\n  data_files:\n  - split: test\n    path: [x/*.parquet, y/*.parquet]\n"
     "- config_name: b\n  default: true\n  data_files:\n  - split: train\n    path: b/*", None, "train", ["b/*"]),
    ("- config_name: a\n  data_files:\n  - split: test\n    path: [x/*.parquet, y/*.parquet]", "a", "test",
     ["x/*.parquet", "y/*.parquet"]),
])
def test_a_dataset_cards_configs_name_the_files_of_a_split(tmp_path, card, config, split, patterns):
    from thinkswitch.hub import _config_patterns

    (tmp_path / "README.md").write_text(f"---\nconfigs:\n{card}\n---\n# a card\n")
    assert _config_patterns(tmp_path / "README.md", config, split, "where") == patterns
    (tmp_path / "README.md").write_text("# a card without configs\n")
    assert _config_patterns(tmp_path / "README.md", None, split, "where") is None
