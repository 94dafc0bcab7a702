"""`make gpu-check`'s rows are independent (issue 26): a row that fails records its error in one line and the rows
after it still run; rows that need the random pair say so when it could not be built; the exit status says a row
failed. Unit-level: the failing checks are stand-ins, the rest run as they are (on the CPU, in seconds)."""

import json

from benchmarks import gpu_check, gpu_stages


def _run(tmp_path, monkeypatch, only: str, *more: str) -> tuple[int, list[dict]]:
    monkeypatch.setenv("THINKSWITCH_VLLM_VENV", str(tmp_path / "no-vllm"))
    out = tmp_path / "rows.jsonl"
    code = gpu_check.main(["--device", "cpu", "--scale", "tiny", "--only", only, "--out", str(out),
                           "--work", str(tmp_path / "work"), *more])
    return code, [json.loads(line) for line in out.read_text().splitlines()]


def _boom(*args):
    raise RuntimeError("no CUDA kernels\nsecond line")


def test_a_failing_row_is_one_line_and_the_rows_after_it_still_run(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.PROBES, "vllm_build", _boom)
    code, rows = _run(tmp_path, monkeypatch, "vllm_build,vllm_startup")
    assert code == 1 and [r["check"] for r in rows] == ["env", "vllm_build", "vllm_startup", "done"]
    assert rows[1]["error"] == "RuntimeError: no CUDA kernels" and "Traceback" in rows[1]["traceback"]
    assert rows[2]["skipped"].startswith("no CUDA vLLM here") and rows[-1]["failed"] == ["vllm_build"]
    assert rows[0]["device"] == "cpu" and "error" not in rows[0] and rows[0]["compilers"].keys() == {"cc", "gcc"}


def test_rows_on_the_random_pair_say_so_when_it_could_not_be_built(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_stages, "build_pair", _boom)
    code, rows = _run(tmp_path, monkeypatch, "merge,paper")
    assert code == 1 and [r["check"] for r in rows] == ["env", "build", "merge", "paper", "done"]
    no_pair = "RuntimeError: not run: the build row (the random pair) did not finish"
    assert rows[2]["error"] == rows[3]["error"] == no_pair
    assert rows[-1]["failed"] == ["build", "merge", "paper"]


def test_a_spent_time_budget_skips_the_rows_not_started_and_still_ends_with_done(tmp_path, monkeypatch):
    code, rows = _run(tmp_path, monkeypatch, "vllm_build,merge", "--budget-s", "0")
    assert code == 0 and [r["check"] for r in rows] == ["env", "vllm_build", "build", "merge", "done"]
    assert all(r["skipped"] == "the time budget (--budget-s 0) is spent" for r in rows[:-1])
    assert rows[-1]["skipped"] == ["env", "vllm_build", "build", "merge"] and rows[-1]["failed"] == []


def test_rows_run_cheapest_first():
    assert gpu_check.CHECKS == ("vllm_build", "validation", "cb_cache", "vllm_startup", "qlora_step", "loop", "build",
                                "distill", "merge", "generate", "cb", "cpu_merge", "nf4", "vllm", "paper")
