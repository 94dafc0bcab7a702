"""Every config composes; bad keys, types and values fail at composition or in check_config."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from tests.support.paths import CONF
from tests.support.shared import compose
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
        # enum-like keys: Hydra names the allowed values
        ("keep_checkpoints=sometimes", ConfigCompositionException),
        ("merge.base=latest", ConfigCompositionException),
        ("model.dtype=float8", ConfigCompositionException),
        ("method.labels=silver", ConfigCompositionException),
        ("distill.filter=best", ConfigCompositionException),
        ("distill.target=pretty", ConfigCompositionException),
        ("domain.source=web", ConfigCompositionException),
        ("generation.backend=tgi", ConfigCompositionException),
        ("generation.quantization=int3", ConfigCompositionException),
        ("tracking.mode=bogus", ConfigCompositionException),
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
        ("device=cuda", r"device: cuda asked for, but torch sees no CUDA device"),
        ("trainer.lora.r=0", r"trainer\.lora\.r: must be an integer >= 1, got 0"),
        ("trainer.sft.learning_rate=-1e-4", r"trainer\.sft\.learning_rate: must be > 0"),
        ("num_threads=0", r"num_threads: must be >= 1"),
        ("cost.gpu_hour_usd=-1", r"cost\.gpu_hour_usd: must be >= 0, got -1"),
        ("tracking.init_timeout=0", r"tracking\.init_timeout: must be > 0"),
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


def test_enum_keys_compare_and_serialise_as_plain_strings():
    """`Choice` members are the strings they name: code compares them to strings, YAML and JSON see strings."""
    import json

    import yaml

    from thinkswitch.config import KeepCheckpoints, as_plain

    cfg = compose(["keep_checkpoints=last", "merge.base=initial"])
    assert cfg.keep_checkpoints is KeepCheckpoints.last and cfg.keep_checkpoints == "last"
    assert f"{cfg.keep_checkpoints}" == "last" and {"last": 1}[cfg.keep_checkpoints] == 1
    plain = as_plain(cfg)
    assert type(plain["keep_checkpoints"]) is str and type(plain["merge"]["base"]) is str
    assert yaml.safe_load(yaml.safe_dump(plain))["model"]["dtype"] == "auto"
    assert json.dumps(cfg.merge.base) == '"initial"'


def test_stage_cache_keys_see_enums_as_their_strings():
    """A stage-cache key digests a config section: an enum member hashes as its string, so the keys of
    runs made before the enums existed still match."""
    from thinkswitch.store.cache import digest

    cfg = compose()
    section = {"method": "slerp", "t": 0.1, "base": "current", "dtype": None, "options": {}}
    assert digest("merge", cfg.merge) == digest("merge", section)
    assert digest(cfg.model.dtype, cfg.generation.backend) == digest("auto", "hf")


@pytest.mark.parametrize("override, env, expected", [
    ([], None, ("offline", "default")),
    ([], "disabled", ("disabled", "WANDB_MODE")),
    (["tracking.mode=online"], "disabled", ("online", "tracking.mode")),  # the config wins over the env
])
def test_tracking_mode_precedence(monkeypatch, override, env, expected):
    from thinkswitch.analysis.tracking import tracking_mode

    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    assert tracking_mode(compose(override).tracking) == expected


def test_a_bad_wandb_mode_in_the_environment_is_a_config_error(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ConfigError, match=r"WANDB_MODE: expected one of \['online', 'offline', 'disabled'\], "
                                          r"got 'bogus'"):
        check_config(compose())
    check_config(compose(["tracking.mode=offline"]))  # tracking.mode set: the env is not read


@pytest.mark.parametrize("override, shown", [
    ("keep_checkpoints=sometimes", "Invalid value 'sometimes', expected one of [all, last, none]"),
    ("tracking.mode=bogus", "expected one of [online, offline, disabled]"),
    ("model=nope", "Could not find 'model/nope'"),
])
def test_cli_prints_a_composition_error_as_one_line(tmp_path, override, shown):
    from tests.support.cli import thinkswitch

    proc = thinkswitch(override, run_dir=tmp_path / "run", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and shown in proc.stderr
    assert not (tmp_path / "run").exists()


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError, match=r"^3 errors: iterations: .*; merge\.method: .*; trainer\.lora\.r: "):
        check_config(compose(["iterations=-1", "merge.method=slurp", "trainer.lora.r=0"]))


# Overlays, not defaults: a preset pins the paper's setting whatever a group's default becomes; the search
# space and launchers configure Hydra's plugins, which have no schema here.
OVERLAYS = ("experiment", "hparams_search", "hydra", "debug")


def _schema_defaults(schema) -> dict:
    """A schema dataclass's defaults as plain values (MISSING ones left out; nested dataclasses as dicts)."""
    import dataclasses
    from enum import Enum

    out = {}
    for f in dataclasses.fields(schema):
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = _schema_defaults(type(value)) if dataclasses.is_dataclass(value) else value
        elif f.default is not dataclasses.MISSING and f.default != "???":
            out[f.name] = f.default.value if isinstance(f.default, Enum) else f.default
    return out


def _repeats(values: dict, baseline: dict, prefix: str = "") -> list[str]:
    """Keys of `values` set to what they would be without it (`baseline`), nested keys included."""
    found = []
    for key, value in values.items():
        if key in ("defaults", "hydra") or key not in baseline:
            continue
        if isinstance(value, dict) and isinstance(baseline[key], dict):
            found += _repeats(value, baseline[key], f"{prefix}{key}.")
        elif value == baseline[key]:
            found.append(f"{prefix}{key}: {value!r}")
    return found


def _baseline(path: Path) -> dict:
    """What a YAML file's keys would be without it: its schema's defaults, then the options it extends."""
    import yaml
    from omegaconf import OmegaConf

    from thinkswitch.config import GROUPS, ExperimentConfig

    group = path.parent.name
    base = _schema_defaults(ExperimentConfig if path.parent == CONF else GROUPS[group])
    for parent in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
        if isinstance(parent, str) and parent not in ("schema", "thinkswitch_schema", "_self_"):
            base = OmegaConf.to_container(OmegaConf.merge(base, _values(path.parent / f"{parent}.yaml")))
    return base


def _values(path: Path) -> dict:
    import yaml

    return {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in ("defaults", "hydra")}


def test_one_default_per_key():
    """Every YAML file under conf/ that sets defaults (config.yaml and each group's options) sets only what
    differs from the schema (or the option it extends): one default per key. The rest are overlays."""
    files = sorted(CONF.rglob("*.yaml"))
    checked = [p for p in files if p.relative_to(CONF).parts[0] not in OVERLAYS]
    from thinkswitch.config import GROUPS

    assert {p.parent.name for p in checked} >= set(GROUPS) and CONF / "config.yaml" in checked
    repeats = [f"{p.relative_to(CONF)}: {r}" for p in checked for r in _repeats(_values(p), _baseline(p))]
    assert not repeats, "defaults repeated from the schema:\n" + "\n".join(repeats)


def test_the_one_default_check_finds_a_repeat(tmp_path):
    """The check above can fail: a domain file repeating `train_prompts: 15` is caught."""
    from thinkswitch.config import DomainConfig

    assert _repeats({"train_prompts": 15, "eval_size": 31, "train": {"split": "train"}},
                    _schema_defaults(DomainConfig)) == ["train_prompts: 15", "train.split: 'train'"]


def test_valid_t_forms_pass():
    for t in ["0", "1", "0.3", "[0,0.5,1]", "[{filter:self_attn,value:[0,0.5]},{value:0.2}]"]:
        check_config(compose([f"merge.t={t}"]))


def test_cli_help_is_fast_and_lists_groups():
    import time

    from tests.support.cli import thinkswitch

    t0 = time.perf_counter()
    out = thinkswitch("--help", timeout=120)
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


def test_debug_configs_run_small_and_out_of_the_way():
    """debug=default and debug=fast: one iteration, few prompts, no W&B, no stage cache, in outputs/debug/; a key
    given after them still wins."""
    for option in ("default", "fast"):
        cfg = compose([f"debug={option}"], hydra_config=True)
        assert cfg.iterations == 1 and cfg.stage_cache is None and cfg.tracking.mode == "disabled", option
        assert cfg.hydra.run.dir.startswith("outputs/debug/") and cfg.hydra.sweep.dir.startswith("outputs/debug/")
    default, fast = compose(["debug=default"]), compose(["debug=fast"])
    assert (default.domain.train_prompts, default.domain.eval_size) == (64, 64)
    assert (fast.domain.train_prompts, fast.domain.eval_size, fast.trainer.sft["num_train_epochs"]) == (8, 8, 1)
    assert compose([]).iterations == 2 and compose([]).stage_cache is not None  # only when asked for
    assert compose(["debug=fast", "domain.eval_size=100", "iterations=2"]).domain.eval_size == 100
    paper = compose(["experiment=paper_aime", "debug=fast"])  # on a preset: its model, the debug sizes
    assert paper.model.name != "testbed" and paper.domain.train_prompts == 8 and paper.iterations == 1


def test_a_run_seed_draws_the_same_prompts_unless_the_domain_seed_is_tied_to_it():
    """docs/sweeps-and-reports.md#seeds-and-the-training-prompts: `seed` alone keeps the draw; `domain.seed=${seed}`,
    one override, draws the training prompts per seed."""
    from thinkswitch.data.domains import load_domain

    small = ["domain.train_prompts=8", "domain.eval_size=8"]

    def prompts(*overrides):
        cfg = compose([*small, *overrides])
        return cfg.domain.seed, [ex["prompt"] for ex in load_domain(cfg.domain, cfg.model)[0]]

    base_seed, base = prompts("seed=0")
    assert prompts("seed=1") == (base_seed, base)
    tied_seed, tied = prompts("seed=1", "domain.seed=${seed}")
    assert tied_seed == 1 and tied != base
    assert prompts("seed=0", "domain.seed=${seed}") == (0, base)


def test_paper_presets_state_their_evaluation_protocol_and_avg4_is_one_override():
    text = (CONF / "experiment" / "paper_base.yaml").read_text()
    assert "Evaluation protocol" in text and "evaluate.samples=1" in text and "evaluate=avg4" in text
    assert compose(["experiment=paper_aime"]).evaluate.samples == 1
    assert compose(["experiment=paper_aime", "evaluate=avg4"]).evaluate.samples == 4
    assert compose(["experiment=paper_pubmedqa", "evaluate=avg4"]).evaluate.samples == 4


def test_labels_without_a_parsable_answer_are_dropped_by_default():
    assert compose().distill.filter == "parsable"
    assert compose(["distill.filter=none"]).distill.filter == "none"
    with pytest.raises(ConfigCompositionException, match="distill.filter") as refused:
        compose(["distill.filter=readable"])
    assert "none, parsable, majority" in str(refused.value.__cause__)
