"""The stage cache: a sweep over t shares iteration 0's evaluation and iteration 1's generation and
distillation; changing a key that matters invalidates exactly the stages it affects."""


import pytest

from tests.support import cli
from thinkswitch.store.cache import StageCache, digest
from thinkswitch.store.digests import digest_outputs
from thinkswitch.store.io import read_json, read_jsonl

BASELINE = {"iter_00/evaluate_instruct", "iter_00/evaluate_thinking"}  # iteration 0: one stage per checkpoint
SMALL = ["iterations=1", "domain.train_prompts=64", "domain.eval_size=100", "tracking.mode=disabled"]


def thinkswitch(stage_cache, *args):
    return cli.thinkswitch(*args, *SMALL, f"stage_cache={stage_cache}")


@pytest.mark.slow
def test_a_t_sweep_shares_generation_distillation_and_baseline(testbed_pair, tmp_path):
    stages = tmp_path / "stages"
    proc = thinkswitch(stages, "--multirun", "merge.t=0,0.5", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job0, job1 = sorted((tmp_path / "sweep").glob("[01]_*"))
    assert reused(job0) == set()
    # and in iteration 1, the evaluation of the instruct checkpoint (the same in every job): only the merged
    # thinking checkpoint is evaluated again
    assert reused(job1) == {*BASELINE, "iter_01/generate", "iter_01/distill", "iter_01/evaluate_instruct"}
    assert read_jsonl(job0 / "iter_01" / "eval_instruct.jsonl") == read_jsonl(job1 / "iter_01" / "eval_instruct.jsonl")
    assert read_jsonl(job0 / "iter_01" / "generations.jsonl") == read_jsonl(job1 / "iter_01" / "generations.jsonl")
    assert (job1 / "iter_01" / "instruct" / "model.safetensors").read_bytes() == \
        (job0 / "iter_01" / "instruct" / "model.safetensors").read_bytes()
    s0, s1 = read_json(job0 / "summary.json"), read_json(job1 / "summary.json")
    assert s0["final"]["instruct/correct"] == s1["final"]["instruct/correct"]  # same distilled model
    assert s0["baseline"] == s1["baseline"]

    # a relevant key changes: distillation (and what follows) reruns; generation is still shared
    proc = thinkswitch(stages, "merge.t=0.5", "trainer.sft.learning_rate=1e-3", f"hydra.run.dir={tmp_path / 'lr'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert reused(tmp_path / "lr") == {*BASELINE, "iter_01/generate"}

    # and the cache can be turned off
    proc = thinkswitch("null", "merge.t=0.5", f"hydra.run.dir={tmp_path / 'off'}")
    assert proc.returncode == 0 and reused(tmp_path / "off") == set()


def reused(run_dir) -> set[str]:
    """The stages a run restored from the stage cache (its `cache/<stage>` metrics)."""
    return {f"{m.parent.name}/{k.split('/')[1]}" for m in run_dir.glob("iter_*/metrics.json")
            for k in read_json(m) if k.startswith("cache/")}


def test_store_and_restore_are_atomic_and_first_writer_wins(tmp_path):
    cache = StageCache(tmp_path / "stages")
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "model").mkdir(parents=True)
    (src / "model" / "w.safetensors").write_bytes(b"abc")
    (src / "gen.jsonl").write_text("{}\n")
    key = digest("generate", {"t": 1})
    assert cache.restore(key, ["gen.jsonl"], dst) is None
    cache.store(key, ["gen.jsonl", "model"], src, {"x": 1}, digest_outputs(src, ["gen.jsonl", "model"]))
    (src / "gen.jsonl").write_text('{"other": 1}\n')
    cache.store(key, ["gen.jsonl", "model"], src, {"x": 2}, digest_outputs(src, ["gen.jsonl", "model"]))  # ignored
    dst.mkdir()
    entry = cache.restore(key, ["gen.jsonl", "model"], dst)
    assert entry.metrics == {"x": 1} and set(entry.digests["files"]) == {"gen.jsonl", "model/w.safetensors"}
    assert (dst / "gen.jsonl").read_text() == "{}\n" and (dst / "model" / "w.safetensors").read_bytes() == b"abc"
    assert not list((tmp_path / "stages").glob(".*.tmp")) and not list(dst.glob(".*.tmp"))
    assert digest("generate", {"t": 1}) != digest("generate", {"t": 2})
    assert StageCache(None).restore(key, [], dst) is None
