"""`thinkswitch-plan --calibrate`: every kind of `make gpu-check` row it reads moves the plan's numbers for its own
engine (issue 26, finding 8): `generate` rows by the backend the run resolved (hf: static batches, cb: continuous
batching), the `cb` benchmark rows (both engines), `vllm` rows, and `distill` (MFU)."""

import json

import pytest

from thinkswitch.plan.cli import main
from thinkswitch.plan.render import plan_text
from thinkswitch.sizing.cards import CARDS
from thinkswitch.sizing.timing import Assumptions, calibrate

ENV, BUILD = {"check": "env", "gpu": "NVIDIA H100 80GB HBM3"}, {"check": "build", "params": 3_600_000_000}
GEN = {"prompts": 15, "tokens": 15 * 1024, "prompt_tokens": 200}
CB = {"check": "cb", "dtype": "bfloat16", "quantization": "none", "prompts": 15, "tokens": 8000, "longest": 1024,
      "static_steps": 1024, "static_batch": 64, "cb_tokens_per_s": 390.0, "static_tokens_per_s": 312.0}
# row -> the assumptions it sets, the backend whose plan it changes (None: distillation), the plan column it moves
ROWS = {
    "generate hf": ({"check": "generate", "backend": "hf", "batch_size": 8, **GEN, "tokens_per_s": 400.0},
                    {"static_overhead"}, "hf", 6),
    "generate cb": ({"check": "generate", "backend": "cb", **GEN, "tokens_per_s": 750.0},
                    {"continuous_overhead"}, "cb", 6),
    "cb bench": (CB, {"continuous_overhead", "static_overhead"}, "cb", 6),
    "cb bench, static": (CB, {"continuous_overhead", "static_overhead"}, "hf", 6),
    "vllm": ({"check": "vllm", "backend": "vllm", **GEN, "tokens_per_s": 1500.0}, {"vllm_overhead"}, "vllm", 6),
    "distill": ({"check": "distill", "tokens_per_s": 1500.0}, {"mfu"}, None, 7),
}
FACTORS = ("static_overhead", "continuous_overhead", "vllm_overhead", "mfu")


def _file(tmp_path, *rows) -> str:
    path = tmp_path / "gpu_check.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (ENV, BUILD, *rows)))
    return path


def _row(text: str) -> list[str]:
    (line,) = [x for x in text.splitlines() if x.startswith("| H100")]
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.parametrize("name", list(ROWS))
def test_each_gpu_check_row_calibrates_its_own_engine(name, tmp_path):
    row, sets, backend, column = ROWS[name]
    a = calibrate(_file(tmp_path, row), Assumptions())
    assumed = Assumptions()
    assert {k for k in FACTORS if getattr(a, k) != getattr(assumed, k)} == sets
    assert all(getattr(a, k) > 0 for k in sets) and "calibrated from gpu_check.jsonl on NVIDIA H100" in a.source
    overrides = ["experiment=paper_aime", *([f"generation.backend={backend}"] if backend else [])]
    before, after = (_row(plan_text(overrides, [CARDS["h100"]], x)) for x in (assumed, a))
    assert before[column] != after[column], (name, before, after)


def test_the_runs_own_generate_row_comes_before_the_cb_benchmark(tmp_path):
    staged = ROWS["generate cb"][0]
    both = calibrate(_file(tmp_path, CB, staged), Assumptions())
    alone = calibrate(_file(tmp_path, staged), Assumptions())
    assert both.continuous_overhead == alone.continuous_overhead
    assert both.static_overhead != Assumptions().static_overhead  # from the benchmark's static batches


def test_failed_nf4_and_unresolved_rows_are_not_read(tmp_path):
    rows = [{**ROWS["generate cb"][0], "error": "RuntimeError: boom"}, {**CB, "quantization": "nf4"},
            {"check": "generate", "backend": "auto", **GEN, "tokens_per_s": 750.0}, ROWS["distill"][0]]
    a = calibrate(_file(tmp_path, *rows), Assumptions())
    assert all(getattr(a, k) == getattr(Assumptions(), k) for k in FACTORS if k != "mfu")


def test_a_cb_row_without_its_fields_is_one_line_naming_file_and_line(tmp_path, capsys):
    path = _file(tmp_path, {k: v for k, v in CB.items() if k != "longest"})
    with pytest.raises(SystemExit):
        main(["--cards", "h100", "--calibrate", str(path)])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--calibrate {path}:3: cb row: longest: expected a number > 0, got None" in err
