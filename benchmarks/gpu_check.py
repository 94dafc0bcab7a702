"""`make gpu-check`: the first minutes on a card, cheapest checks first, one JSON line per row. No hub access needed.

    python -m benchmarks.gpu_check                          # CUDA, Qwen3-4B body shape (from the repository root)
    python -m benchmarks.gpu_check --device cpu --scale tiny  # the same on a CPU at a tiny shape (the test suite)

Rows, in order (`--only` picks some; `env` is always recorded). The first ones take seconds each (`gpu_probe.py`):

  env           torch and CUDA (driver, CUDA build, card), a C compiler for Triton, bitsandbytes' CUDA kernels
  vllm_build    the installed vLLM: its platform and whether it has a bitsandbytes quantization (recorded, not fatal)
  validation    whether the run's config validation starts CUDA (a child process), the GPUs a pinned run sees
  cb_cache      the cb engine on the testbed pair: the paged cache transformers built vs the plan's prediction for
                the same free memory, and the attention in use
  vllm_startup  a CUDA vLLM started with the run's max_model_len: free memory before, running and after
  qlora_step    one optimizer step of the project's QLoRA trainer on the testbed pair (TRL's Triton LM-head path)

then the measured ones (`gpu_stages.py`): loop (the testbed experiment, 1 iteration), build (the random pair of
Qwen3-4B's shape), distill, merge, generate, cb, cpu_merge, nf4, vllm, and paper (`experiment=paper_aime` itself,
1 iteration at short budgets).

Each row: `check`, and where measured `seconds`, `cuda_peak_gib` (`torch.cuda.max_memory_allocated`, reset before
the check), `rss_peak_gib`, `tokens_per_s` and the stage's own metrics. A row that fails holds `error` (one line) and
`traceback`, and the rows after it still run (a row that needs the random pair says so when `build` failed); the
last row, `done`, lists the failed and skipped ones, and the exit status is 1 if any failed. `--budget-s N` skips
the rows not started after N seconds (each writes a line saying so): a card lent for minutes still gets `done`.
Written to `--out` (default `gpu_check.jsonl`) and, when `$OUT` is set, to `$OUT/gpu_check.jsonl`;
`thinkswitch-plan --calibrate` reads it. The testbed pair ships with the repository (`thinkswitch/testbed/pair`).
Without CUDA (and no `--device cpu`) it ends in one line, exit status 2. On a machine without network, its own
Python and CUDA torch: `make gpu-carry` here, then `bash benchmarks/gpu_device.sh` there (`gpu_carry.py`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

if not __package__:  # `python benchmarks/gpu_check.py`: run as the module it is, the repository root importable
    _root = str(Path(__file__).resolve().parents[1])
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.gpu_check", *sys.argv[1:]],
              {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_root, os.environ.get("PYTHONPATH")]))})

from benchmarks import gpu_probe, gpu_stages  # noqa: E402
from benchmarks.gpu_stages import DEFAULTS, SHAPES

PROBES = {"vllm_build": gpu_probe.check_vllm_build, "validation": gpu_probe.check_validation,
          "cb_cache": gpu_probe.check_cb_cache, "vllm_startup": gpu_probe.check_vllm_startup,
          "qlora_step": gpu_probe.check_qlora_step}
STAGES = {"distill": gpu_stages.check_distill, "merge": gpu_stages.check_merge, "generate": gpu_stages.check_generate,
          "cb": gpu_stages.check_cb, "cpu_merge": gpu_stages.check_cpu_merge, "nf4": gpu_stages.check_nf4,
          "vllm": gpu_stages.check_vllm}  # on the random pair, under the preset
CHECKS = (*PROBES, "loop", "build", *STAGES, "paper")

log = logging.getLogger("gpu_check")


class Report:
    """JSON lines to the output files (appended and flushed as they come) and the log."""

    def __init__(self, paths: list[Path], budget_s: float | None = None):
        self.paths, self.failed, self.skipped, self.budget_s = paths, [], [], budget_s
        self.t0 = time.perf_counter()
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("")

    def spent(self) -> bool:
        """Whether the time budget (`--budget-s`) is spent: rows not yet started are then skipped."""
        return self.budget_s is not None and time.perf_counter() - self.t0 > self.budget_s

    def __call__(self, row: dict) -> None:
        line = json.dumps(row, default=str)
        for p in self.paths:
            with open(p, "a") as f:
                f.write(line + "\n")
        log.info("%s", line)
        if "error" in row:
            self.failed.append(row["check"])
        elif "skipped" in row:
            self.skipped.append(row["check"])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cpu or auto")
    p.add_argument("--scale", choices=sorted(SHAPES), default="4b")
    p.add_argument("--only", default=",".join(CHECKS), help=f"comma list of {', '.join(CHECKS)}")
    p.add_argument("--out", type=Path, default=Path("gpu_check.jsonl"))
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one, removed)")
    p.add_argument("--pairs", type=int, default=None, help="distillation pairs (4b: the paper's 15)")
    p.add_argument("--answer-tokens", type=int, default=None)
    p.add_argument("--prompts", type=int, default=15, help="prompts to generate for (the paper's 15)")
    p.add_argument("--gen-tokens", type=int, default=None, help="new tokens per output")
    p.add_argument("--shard-size", default=None, help="shard size of the checkpoints written (default: shard_size)")
    p.add_argument("--loop-args", nargs="*", default=[], help="more overrides for the loop check")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds after which rows not yet started are skipped (each says so), so that a session's "
                        "time limit ends the run with its `done` row")
    args = p.parse_args(argv)
    args.pairs = args.pairs or DEFAULTS[args.scale]["pairs"]
    args.answer_tokens = args.answer_tokens or DEFAULTS[args.scale]["answer_tokens"]
    args.gen_tokens = args.gen_tokens or DEFAULTS[args.scale]["gen_tokens"]
    unknown = set(args.only.split(",")) - set(CHECKS) - {"env"}
    if unknown:
        p.error(f"--only: unknown checks {sorted(unknown)}")
    return args


def _attempt(report: Report, name: str, fn, *fn_args):
    """`fn(*fn_args)`, or its error recorded as the row `name` (one line, and the traceback's end); once the time
    budget is spent, a row saying so instead."""
    if report.spent():
        report({"check": name, "skipped": f"the time budget (--budget-s {report.budget_s:g}) is spent"})
        return None
    try:
        return fn(*fn_args)
    except Exception as e:  # noqa: BLE001 - one failing check must not stop the others
        first = (str(e).strip().splitlines() or [""])[0]
        report({"check": name, "error": f"{type(e).__name__}: {first}"[:500],
                "traceback": traceback.format_exc()[-3000:]})
        return None


def _no_pair():
    raise RuntimeError("not run: the build row (the random pair) did not finish")


def run_checks(args, device, work: Path, report: Report) -> None:
    """Every row `--only` asks for, cheapest first, each recorded whatever happened to the others."""
    from thinkswitch.loop import frozen_library_heap

    only = args.only.split(",")
    _attempt(report, "env", gpu_probe.environment, args, device, work / "env", report)
    for name, fn in PROBES.items():
        if name in only:
            _attempt(report, name, fn, args, device, work / name, report)
    if "loop" in only:
        _attempt(report, "loop", gpu_stages.check_loop, args, device, work, report)
    needs_pair = [n for n in (*STAGES, "paper") if n in only]
    if not needs_pair and "build" not in only:
        return
    pair = _attempt(report, "build", gpu_stages.build_pair, args, device, work, report)
    if pair is None:
        for name in needs_pair:
            _attempt(report, name, _no_pair)
        return
    cfg = gpu_stages.preset(args, pair, work)
    with frozen_library_heap(cfg):  # as run_experiment does around a run
        for name, fn in STAGES.items():
            if name in only:
                _attempt(report, name, fn, args, device, cfg, pair, work / name, report)
    if "paper" in only:
        _attempt(report, "paper", gpu_stages.check_paper, args, device, pair, work / "paper", report)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")  # no hub: everything is local
    os.environ.setdefault("WANDB_MODE", "disabled")
    from thinkswitch.engines.gpus import cuda_count
    from thinkswitch.engines.models import pick_device

    if args.device != "cpu" and not cuda_count():  # one line, before anything is spent
        import torch

        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build: {torch.version.cuda}); on a GPU "
              "machine see the README's CUDA install (make install-cuda), or run --device cpu --scale tiny",
              file=sys.stderr)
        return 2
    device = pick_device(args.device)
    outs = [args.out] + ([Path(os.environ["OUT"]) / "gpu_check.jsonl"] if os.environ.get("OUT") else [])
    report = Report(outs, args.budget_s)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_checks(args, device, work, report)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report({"check": "done", "seconds": round(time.perf_counter() - report.t0, 1), "failed": report.failed,
            "skipped": report.skipped})
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
