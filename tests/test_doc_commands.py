"""Every command the README and docs/ show (```bash / ```sh blocks, `$ ` lines of ```console blocks) still works.

`thinkswitch ...` (and `python -m thinkswitch.cli ...`): its overrides compose, as `thinkswitch --cfg job` would
compose them (every job of a `--multirun` sweep), into the typed config; a console example that shows an `error:`
must still fail with that error. `thinkswitch-plan ...` runs (it loads no model). `make <target>`: the target exists,
and the options passed in ARGS are the script's. `bash <script>`: the script exists, and the options shown are
those of the program it passes them on to. `hf`, `wandb`, `thinkswitch-report`: installed, with the options
shown. Running the experiments themselves is the other tests' work (`make test` runs `thinkswitch` end to end, on
the testbed and, offline, on the paper's ids: tests/test_real_path.py). A new kind of command fails here until it
is checked."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.shared import compose

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(bash|sh|console)\n(.*?)```", re.S)
BIN = Path(sys.executable).parent
SCRIPTS = {"gpu-check": "benchmarks/gpu_check.py", "bench": "benchmarks/bench.py",  # make targets taking ARGS
           "gpu-carry": "benchmarks/gpu_carry.py"}
PASSES_ON = {"benchmarks/gpu_device.sh": "benchmarks/gpu_check.py"}  # shell scripts: whose options they take


def shown_commands() -> list[tuple[str, str, str]]:
    """(where, command, the error a console example shows after it or '') for every command on the pages."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in BLOCK.finditer(text):
            lang, body = block.groups()
            line_no = text[:block.start()].count("\n") + 2
            lines = body.replace("\\\n", " ").splitlines()
            for i, line in enumerate(lines):
                if lang == "console" and not line.startswith("$ "):
                    continue
                command = shlex.split(line.removeprefix("$ "), comments=True)
                if not command:
                    continue
                after = lines[i + 1] if i + 1 < len(lines) else ""
                error = after.split("error: ", 1)[1] if lang == "console" and "error: " in after else ""
                found.append((f"{page.relative_to(ROOT)}:{line_no + i}", shlex.join(command), error))
    return found


COMMANDS = list({(c, e): (w, c, e) for w, c, e in reversed(shown_commands())}.values())[::-1]  # each once: its first


def test_the_pages_show_commands():
    programs = {shlex.split(c)[0] for _, c, _ in COMMANDS}
    assert {"thinkswitch", "thinkswitch-plan", "make", "hf"} <= programs, programs
    assert len(COMMANDS) > 40


def without_env(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    return env, argv


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Jobs of a `--multirun` that between them take every value of every sweep (each sweep's values in turn, the
    other sweeps at their first value: not Hydra's whole cartesian product, whose other jobs compose the same)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        key = parsed.get_key_element()
        choices.append([f"{key}={v}" for v in parsed.sweep_string_iterator()] if parsed.is_sweep_override() else [text])
    first = [c[0] for c in choices]
    return [first] + [first[:i] + [v] + first[i + 1:] for i, c in enumerate(choices) for v in c[1:]]


def check_thinkswitch(argv: list[str], env: dict[str, str], error: str, monkeypatch, tmp_path) -> None:
    from huggingface_hub import constants

    from thinkswitch.setup import resolve_pair
    from thinkswitch.validate import check_config

    overrides = [a for a in argv if a not in ("--multirun", "--cfg", "job", "--help")]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    jobs = sweep_jobs(overrides) if "--multirun" in argv else [overrides]
    if not error:
        compose(jobs[0], hydra_config=True)  # Hydra's own keys (launchers, run directories) compose too
        for job in jobs:
            compose([o for o in job if not o.lstrip("+").startswith(("hydra.", "hydra/"))])
        return
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty hub cache (offline: conftest)
    try:
        cfg = compose(jobs[0])
        check_config(cfg)
        resolve_pair(cfg.model, tmp_path)
    except Exception as e:  # noqa: BLE001 - what the command prints: composition (Hydra) or ours, in one line
        from thinkswitch.cli import composition_error

        text = composition_error(e) if "hydra" in type(e).__module__ else f"error: {e}"
    else:
        pytest.fail(f"expected: error: {error}")
    shown = re.escape(error)
    shown = re.sub(r"\\\(/.*?\\\)", r"\\(.*?\\)", shown)  # a path in parentheses: any path
    assert re.fullmatch(f"error: {shown}", text), (error, text)


def check_plan(argv: list[str], capsys) -> None:
    from thinkswitch.plan.cli import main, parse_args

    if "--calibrate" in argv:  # needs a make gpu-check output: its options parse (tests/test_plan.py calibrates)
        assert parse_args(argv).calibrate
        return
    main(argv)
    assert "thinkswitch-plan" in capsys.readouterr().out


def check_make(argv: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = argv[0]
    assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"no make target {target!r}"
    for arg in argv[1:]:
        name, _, value = arg.partition("=")
        assert re.search(rf"^{name}\s*\?=", makefile, flags=re.M), f"make variable {name} is not the Makefile's"
        if name == "ARGS":
            script = (ROOT / SCRIPTS[target]).read_text()
            for option in re.findall(r"--[\w-]+", value):
                assert f'"{option}"' in script, f"{target}: {option} is not an option of {SCRIPTS[target]}"


@functools.cache
def help_text(*command: str) -> str:
    return subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120).stdout


def check_tool(argv: list[str]) -> None:
    """An installed tool (`hf`, `wandb`, the package's own): present, with the options shown."""
    program = BIN / argv[0]
    assert program.is_file(), program
    sub = [a for a in argv[1:2] if not a.startswith("-")]
    if argv[0] == "thinkswitch-report":
        return  # its argument is a placeholder (tests/test_report.py runs it)
    usage = help_text(str(program), *sub)
    for option in re.findall(r"\s(--[\w-]+)", " " + " ".join(argv)):
        assert option in usage, f"{argv[0]} {' '.join(sub)}: no option {option}"


@pytest.mark.parametrize("where, command, error", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_every_shown_command_works(where, command, error, monkeypatch, capsys, tmp_path):
    env, argv = without_env(shlex.split(command))
    program, args = argv[0], argv[1:]
    if program in ("python", "python3") and args[:2] == ["-m", "thinkswitch.cli"]:
        program, args = "thinkswitch", args[2:]
    if program == "thinkswitch":
        check_thinkswitch(args, env, error, monkeypatch, tmp_path)
    elif program == "thinkswitch-plan":
        check_plan(args, capsys)
    elif program == "make":
        check_make(args)
    elif program in ("python", "python3"):
        assert (ROOT / args[0]).is_file(), f"{where}: no script {args[0]}"
    elif program in ("hf", "wandb", "thinkswitch-report"):
        check_tool(argv)
    elif program == "bash":
        script = ROOT / args[0]
        assert script.is_file() and args[0] in PASSES_ON, f"{where}: {args[0]}: no such script, or not taught here"
        for option in re.findall(r"--[\w-]+", " ".join(args[1:])):
            assert f'"{option}"' in (ROOT / PASSES_ON[args[0]]).read_text(), f"{where}: {option} is not an option"
    elif program == "echo":
        pass
    else:
        pytest.fail(f"{where}: {command!r}: a command this test does not know how to check; teach it")
