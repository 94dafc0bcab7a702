"""`thinkswitch-plan` checks what it is given: the run's own checks of the composed config, its own options, a
`--calibrate` file row by row (file:line), and overrides anywhere on its command line."""

import json

import pytest

from thinkswitch.plan.cli import main

ENV, BUILD = {"check": "env", "gpu": "NVIDIA H200"}, {"check": "build", "params": 3_600_000_000}
GENERATE = {"check": "generate", "backend": "hf", "batch_size": 8, "prompts": 15, "tokens": 15360,
            "tokens_per_s": 900.0}


def refused(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("args,message", [
    (["model.sampling.thinking.max_new_tokens=0"], "model.sampling.thinking.max_new_tokens: must be >= 1, got 0"),
    (["cost.gpu_hour_usd=-1"], "cost.gpu_hour_usd: must be >= 0, got -1.0"),
    (["domain.train_prompts=0"], "domain.train_prompts: must be >= 1, got 0"),
    (["merge.t=1.5"], "merge.t: 1.5 is outside [0, 1]"),
    (["--prompt-tokens", "-5"], "--prompt-tokens: must be > 0, got -5"),
    (["--answer-tokens", "0"], "--answer-tokens: must be > 0, got 0"),
    (["--usd-per-hour", "-1"], "--usd-per-hour: must be >= 0, got -1.0"),
])
def test_what_a_run_refuses_and_bad_options_are_refused_in_one_line(args, message, capsys):
    assert message in refused(["--cards", "h100", *args], capsys)


@pytest.mark.parametrize("lines,message", [
    (["not json"], ":1: not valid JSON"),
    ([json.dumps(ENV), "[1, 2]"], ":2: not a gpu-check row"),
    ([json.dumps(ENV), json.dumps(BUILD), json.dumps({**GENERATE, "prompts": 0})],
     ":3: generate row: prompts: expected a number > 0, got 0"),
    ([json.dumps(ENV), json.dumps({"check": "build", "params": "many"})],
     ":2: build row: params: expected a number > 0, got 'many'"),
    ([json.dumps(ENV), json.dumps(BUILD), json.dumps({**GENERATE, "batch_size": -8})],
     ":3: generate row: batch_size: expected a number > 0, got -8"),
    ([json.dumps(BUILD), json.dumps(GENERATE)], "no env row (which GPU it ran on)"),
    ([json.dumps({"check": "env", "gpu": None})], ":1: env row: gpu: expected a name, got None"),
])
def test_a_calibration_file_that_is_not_gpu_check_rows_is_one_line_naming_file_and_line(lines, message, tmp_path,
                                                                                          capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert f"--calibrate {path}" in (err := refused(["--cards", "h100", "--calibrate", str(path)], capsys))
    assert message in err


def test_overrides_go_anywhere_on_the_command_line(capsys):
    main(["--cards", "3070", "generation.backend=cb", "--usd-per-hour", "0.5", "iterations=2"])
    out = capsys.readouterr().out
    assert "RTX 3070" in out and "generation.backend=cb" in out and "iterations=2" in out
