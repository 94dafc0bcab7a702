"""Every config composes; bad keys, types and values fail at composition or in check_config."""

from pathlib import Path

import pytest
from conftest import CONF, compose
from hydra.errors import ConfigCompositionException

from thinkswitch.validate import ConfigError, check_config

GROUP_OPTIONS = [(p.parent.name, p.stem) for p in sorted(CONF.glob("*/*.yaml"))]


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_config_composes(group, option):
    needs = {"local": ["model.instruct=/ckpt/instruct", "model.thinking=/ckpt/thinking"]}.get(option, [])
    cfg = compose([f"{group}={option}", *needs])  # typed dataclasses: every interpolation resolved
    check_config(cfg)


def test_default_is_the_testbed():
    cfg = compose()
    assert cfg.model.name == "testbed" and cfg.domain.name == "testbed"
    assert cfg.model.testbed is not None
    assert cfg.trainer.name == "lora" and cfg.trainer.quantize_4bit is False
    assert compose(["trainer=qlora"]).trainer.quantize_4bit is True  # QLoRA, as in the paper


@pytest.mark.parametrize(
    "override, error",
    [
        ("merge.tt=0.3", ConfigCompositionException),  # misspelled key
        ("iterations=two", ConfigCompositionException),  # wrong type
        ("domain.train_prompts=1.5", ConfigCompositionException),
        ("model=nope", ConfigCompositionException),  # no such option
        ("trainer.quantize_4bit=maybe", ConfigCompositionException),
    ],
)
def test_composition_rejects(override, error):
    with pytest.raises(error):
        compose([override])


@pytest.mark.parametrize(
    "override, match",
    [
        ("merge.t=1.5", r"merge\.t: 1\.5 is outside \[0, 1\]"),
        ("merge.t=-0.1", r"merge\.t: -0\.1 is outside"),
        ("merge.t=[0.1,2.0]", r"merge\.t\[1\]: 2\.0 is outside"),
        ("merge.t=[{filter:self_attn,value:[0,1.2]},{value:0.5}]", r"merge\.t\[0\]\.value\[1\]"),
        ("merge.t=[{filt:mlp,value:0.3}]", r"merge\.t\[0\]: expected \{filter"),
        ("iterations=-1", r"iterations: must be >= 0"),
        ("domain.train_prompts=0", r"domain\.train_prompts: must be >= 1"),
        ("domain.eval_size=0", r"domain\.eval_size"),
        ("merge.base=latest", r"merge\.base"),
        ("domain.grader=nope", r"domain\.grader: unknown grader 'nope'"),
        ("+trainer.lora.rank=8", r"trainer\.lora"),
        ("+trainer.sft.learning_rat=1e-4", r"trainer\.sft"),
        ("device=tpu", r"device"),
        ("shard_size=big", r"shard_size: expected a size like 1GB"),
        ("shard_size=0MB", r"shard_size: expected a positive size"),
        # checked by the libraries themselves, before any model loads
        ("merge.method=slurp", r"merge\.method: unknown mergekit method 'slurp'"),
        ("+merge.options.lazy_unpikle=true", r"merge\.options: unknown mergekit option\(s\) \['lazy_unpikle'\]"),
        ("+merge.options.out_shard_size=many", r"merge\.options: "),
        ("merge.t=[{filter:mlp,value:0.3}]", r"merge\.t: a per-filter list needs a last entry without a filter"),
        ("model.sampling.thinking.top_p=1.5", r"model\.sampling\.thinking\.top_p: must be in \(0, 1\]"),
        ("model.sampling.instruct.max_new_tokens=0", r"model\.sampling\.instruct\.max_new_tokens: must be >= 1"),
        ("model.dtype=float8", r"model\.dtype: expected one of"),
        ("device=cuda", r"device: cuda asked for, but torch sees no CUDA device"),
        ("trainer.lora.r=0", r"trainer\.lora\.r: must be an integer >= 1, got 0"),
        ("trainer.sft.learning_rate=-1e-4", r"trainer\.sft\.learning_rate: must be > 0"),
        ("num_threads=0", r"num_threads: must be >= 1"),
        ("model.instruct=/some/dir", r"model\.instruct: ignored by model=testbed .* use model=local"),
        ("domain.eval.gold_regex='####'", r"domain\.eval\.gold_regex: '####' has 0 groups; it needs exactly one"),
        ("domain.eval.gold_regex='(a)(b)'", r"domain\.eval\.gold_regex: '\(a\)\(b\)' has 2 groups"),
        ("domain.train.gold_regex='(a'", r"domain\.train\.gold_regex: '\(a' is not a valid regular expression"),
    ],
)
def test_check_config_names_the_key(override, match):
    cfg = compose([override])
    with pytest.raises(ConfigError, match=match):
        check_config(cfg)


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError, match=r"^3 errors: iterations: .*; merge\.method: .*; trainer\.lora\.r: "):
        check_config(compose(["iterations=-1", "merge.method=slurp", "trainer.lora.r=0"]))


def test_one_default_per_key():
    """A key's default is in the schema or in the YAML of a group's only/default option, never in both."""
    import dataclasses

    import yaml

    from thinkswitch.config import GROUPS, ExperimentConfig

    def set_keys(path):
        data = yaml.safe_load(path.read_text()) or {}
        return {k for k in data if k not in ("defaults", "hydra")}

    pairs = [(CONF / "config.yaml", ExperimentConfig)] + [
        (CONF / group / f"{option}.yaml", GROUPS[group]) for group, option in
        (("generation", "default"), ("merge", "slerp"), ("evaluate", "default"), ("tracking", "wandb"))]
    for path, schema in pairs:
        for f in dataclasses.fields(schema):
            has_default = f.default is not dataclasses.MISSING and f.default != "???"
            has_default |= f.default_factory is not dataclasses.MISSING
            assert not (has_default and f.name in set_keys(path)), f"{f.name}: defaults in {path.name} and the schema"


def test_valid_t_forms_pass():
    for t in ["0", "1", "0.3", "[0,0.5,1]", "[{filter:self_attn,value:[0,0.5]},{value:0.2}]"]:
        check_config(compose([f"merge.t={t}"]))


def test_cli_help_is_fast_and_lists_groups():
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "thinkswitch.cli", "--help"], capture_output=True, text=True,
                         cwd=Path(CONF).parent, timeout=120)
    assert out.returncode == 0, out.stderr
    for group in ("model", "domain", "trainer", "merge", "generation", "tracking"):
        assert f"{group}:" in out.stdout
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("preset, domain", [("paper_aime", "aime"), ("paper_pubmedqa", "pubmedqa")])
def test_paper_presets_compose(preset, domain):
    cfg = compose([f"experiment={preset}"])
    check_config(cfg)
    assert cfg.model.instruct == "Qwen/Qwen3-4B-Instruct-2507"
    assert cfg.model.thinking == "Qwen/Qwen3-4B-Thinking-2507"
    assert cfg.domain.name == domain and cfg.domain.train_prompts == 15 and cfg.domain.eval_size == 30
    assert cfg.trainer.quantize_4bit and cfg.trainer.bnb["bnb_4bit_quant_type"] == "nf4"
    assert cfg.merge.method == "slerp"
    thinking = cfg.model.sampling.thinking
    assert (thinking.temperature, thinking.top_p, thinking.top_k) == (0.6, 0.95, 20)
    # the command line still wins over a preset: offline data
    assert compose([f"experiment={preset}", f"domain={domain}_local"]).domain.train.files


def test_presets_share_one_base():
    aime, pubmedqa = compose(["experiment=paper_aime"]), compose(["experiment=paper_pubmedqa"])
    assert aime.trainer == pubmedqa.trainer and aime.merge == pubmedqa.merge and aime.generation == pubmedqa.generation
    assert (aime.domain.name, pubmedqa.domain.name) == ("aime", "pubmedqa")


def test_aime_preset_can_score_with_math_verify():
    cfg = compose(["experiment=paper_aime", "domain=aime_local", "domain.grader=math_verify"])
    check_config(cfg)
    assert cfg.domain.grader == "math_verify" and cfg.domain.name == "aime"


def test_local_model_needs_both_paths():
    with pytest.raises(ConfigError, match=r"model\.instruct / model\.thinking"):
        check_config(compose(["model=local"]))


@pytest.mark.parametrize("text, size", [("1GB", 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 * 2**30),
                                        ("1.5gb", 15 * 10**8), ("4096", 4096), (123, 123), ("10 KB", 10**4)])
def test_parse_size(text, size):
    from thinkswitch.store.io import parse_size

    assert parse_size(text) == size
