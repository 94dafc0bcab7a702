"""Benchmarks: thinkswitch's stages against the bare libraries, measured side by side in one run.

    python -m benchmarks.bench [--quick] [--only SECTION ...] [--sweep-args KEY=VALUE ...]   (from the repository root)
    (make bench; one section: make bench ARGS="--only parallel")

Prints one line per measurement and the ratios the project's goals are stated in:
  generate  framework tokens/s vs a bare batched HF `generate` (goal >= 0.95x) and vs one prompt at a time
  distill   the framework's distill stage vs a bare TRL SFTTrainer script doing the same work: load, train,
            save the adapter, merge it, save the checkpoint (goal <= 1.05x)
  merge     framework vs a bare mergekit run (goal <= 1.05x); peak RSS growth vs one checkpoint (goal <= 1.3x),
            on checkpoints in 8 shards (as the framework writes a 4B model) and in one file
  digest    what verifying outputs costs: SHA-256 of a ~400 MB checkpoint in MB/s, vs the merge stage's time;
            and the stage cache's copy of it (store or restore) in MB/s
  demo      the default experiment's wall time, by stage
  sweep     a 1-iteration, 4-point t sweep with and without the stage cache (goal >= 2.5x); --sweep-args
            adds overrides to both sweeps (e.g. smaller domain sizes on a busy machine)
  parallel  the same sweep with its jobs in parallel (joblib launcher, n_jobs=2, one torch thread each), with
            a shared stage cache and without: how many times each shared stage ran (goal: once) and the
            wall-time ratio
  vllm      generation.backend=vllm vs hf: tokens/s, ratio and engine start-up, on the testbed and on a
            random ~25M-parameter Qwen3 with ragged answer lengths (benchmarks/bench_vllm.py; skipped
            without `make install-vllm`)
  cb        continuous batching (generation.backend=cb) vs static HF batches on the same ragged case, one run
            (benchmarks/bench_cb.py)
Everything runs on the testbed pair (built once) and on CPU unless a GPU is present; the merge on a
random 100M-parameter pair of the same architecture. What the benchmarks share is in benchmarks/common.py; the
programs timed in a process of their own (the bare TRL script, the framework's distill stage, the merge) are
benchmarks/programs/*.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_cb import bench_cb
from benchmarks.bench_vllm import bench_vllm
from benchmarks.common import CACHE, ROOT, compose, line, offline, random_qwen3_pair, run_program

offline()


def bench_generate(pair, n: int) -> None:
    import torch

    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.base import sampling_kwargs
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.hf import generate_texts
    from thinkswitch.engines.models import load_model, load_tokenizer

    cfg = compose([])
    model = load_model(pair.thinking, cfg.model, torch.device("cpu"))
    tok = load_tokenizer(pair.thinking, cfg.model)
    prompts = [chat_prompt(tok, ex["prompt"]) for ex in task_examples(n, 5, "train", TestbedSpec())]
    sampling, batch = cfg.model.sampling.thinking, cfg.generation.batch_size

    generate_texts(model, tok, prompts[:batch], sampling, batch, 0)  # warm-up
    t0 = time.perf_counter()
    ours = generate_texts(model, tok, prompts, sampling, batch, 0)
    ours_tps = sum(r["tokens"] for r in ours) / (time.perf_counter() - t0)

    def bare(chunks):
        tokens, t0 = 0, time.perf_counter()
        with torch.inference_mode():
            for chunk in chunks:
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                out = model.generate(**enc, **sampling_kwargs(sampling), pad_token_id=tok.pad_token_id)
                for row in out[:, enc["input_ids"].shape[1]:].tolist():  # up to and including the first EOS
                    tokens += row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        return tokens / (time.perf_counter() - t0)

    torch.manual_seed(0)
    bare_tps = bare([prompts[i:i + batch] for i in range(0, len(prompts), batch)])
    naive_tps = bare([[p] for p in prompts[: max(8, n // 8)]])
    line("generate: framework", ours_tps, "tokens/s")
    line("generate: bare batched HF generate", bare_tps, "tokens/s")
    line("generate: one prompt at a time", naive_tps, "tokens/s")
    line("generate: framework / bare", ours_tps / bare_tps, "x", "goal >= 0.95")
    line("generate: batched / one at a time", ours_tps / naive_tps, "x", "the batching gain")


def bench_distill(pair, work: Path, n: int) -> None:

    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.store.io import write_jsonl

    cfg = compose([])
    pairs = work / "pairs.jsonl"
    write_jsonl(pairs, [{"id": e["id"], "prompt": e["prompt"], "completion": e["answer"]}
                        for e in task_examples(n, 9, "train", TestbedSpec())])
    sft, lora = dict(cfg.trainer.sft), dict(cfg.trainer.lora)
    bare, ours = [], []
    for _ in range(3):  # alternate, so machine noise hits both alike
        bare.append(run_program("bare_sft", pair.instruct, str(pairs), json.dumps(sft), json.dumps(lora),
                                str(work / "bare"))["seconds"])
        ours.append(run_program("ours_sft", pair.instruct, str(pairs), str(work / "ours"))["seconds"])
        for d in ("bare", "ours"):
            shutil.rmtree(work / d, ignore_errors=True)
    note = "load, train, save adapter, merge it, save checkpoint"
    line("distill: framework distill stage", min(ours), "s", f"{n} pairs, best of 3: {note}")
    line("distill: bare TRL SFTTrainer script", min(bare), "s", "same SFTConfig and LoraConfig, same steps")
    line("distill: framework / bare", min(ours) / min(bare), "x", "goal <= 1.05")


def bench_merge(work: Path, hidden: int, layers: int) -> None:
    """Time against bare mergekit; memory on checkpoints laid out as the framework writes a 4B model's
    (`shard_size=1GB`: 8 shards of an 8 GB bf16 checkpoint), and on one-file checkpoints for comparison."""
    from thinkswitch.store.rundir import checkpoint_bytes

    results: dict = {}
    digests: dict = {}
    for layout, shards in (("8 shards", 8), ("one file", 1)):
        thinking, instruct = random_qwen3_pair(work / layout.replace(" ", "_"), hidden, layers, shards)
        size = checkpoint_bytes(thinking)
        for i in range(2):
            for mode in ("bare", "ours"):
                out = work / f"merged_{mode}_{i}"
                row = run_program("merge", mode, thinking, instruct, str(out), str(size // shards + 1))
                results.setdefault((layout, mode), []).append(row)
                shutil.rmtree(out, ignore_errors=True)
        digests[layout] = measure_digest(Path(thinking), work / "copied")
        shutil.rmtree(work / layout.replace(" ", "_"))
    line("merge: checkpoint size", size / 1e6, "MB", f"hidden {hidden}, {layers} layers")
    for layout in ("8 shards", "one file"):
        ours, bare = results[(layout, "ours")], results[(layout, "bare")]
        t_ours, t_bare = min(r["seconds"] for r in ours), min(r["seconds"] for r in bare)
        line(f"merge [{layout}]: framework", t_ours, "s", "best of 2")
        line(f"merge [{layout}]: bare mergekit run_merge", t_bare, "s", "mergekit's default options")
        line(f"merge [{layout}]: framework / bare", t_ours / t_bare, "x", "goal <= 1.05")
        for mode, who in (("ours", "framework"), ("bare", "bare mergekit")):
            rss = max(r["rss_growth"] for r in results[(layout, mode)]) / size
            anon = max(r["anon_growth"] for r in results[(layout, mode)]) / size
            goal = "goal <= 1.3; " if (layout, mode) == ("8 shards", "ours") else ""
            line(f"merge [{layout}]: {who} peak RSS / checkpoint", rss, "x",
                 f"{goal}anonymous {anon:.2f}x, the rest mapped input pages")
    for layout in ("8 shards", "one file"):
        d, merge_s = digests[layout], min(r["seconds"] for r in results[(layout, "ours")])
        line(f"digest [{layout}]: {d['algorithm']} of a checkpoint", d["bytes"] / 1e6 / d["digest_s"], "MB/s",
             f"{d['digest_s']:.2f} s for {d['bytes'] / 1e6:.0f} MB = {d['digest_s'] / merge_s:.2f}x the merge stage "
             f"({merge_s:.2f} s), {d['threads']} threads, page cache warm")
        line(f"cache [{layout}]: copy of a checkpoint (store/restore)", d["bytes"] / 1e6 / d["copy_s"], "MB/s",
             f"{d['copy_s']:.2f} s, {d['how']}")


def measure_digest(checkpoint: Path, scratch: Path) -> dict:
    """What verification costs: digesting a checkpoint as a stage does when it finishes (and a resume or a
    cache restore when it checks it), best of 3; and copying it as the stage cache does."""
    from thinkswitch.store import digests
    from thinkswitch.store.cache import copy_tree

    names = [p.name for p in checkpoint.iterdir()]
    seconds = []
    for _ in range(3):
        t0 = time.perf_counter()
        record = digests.digest_outputs(checkpoint, names)
        seconds.append(time.perf_counter() - t0)
    copies = []
    for _ in range(2):
        t0 = time.perf_counter()
        copy_tree(checkpoint, scratch)
        copies.append(time.perf_counter() - t0)
        shutil.rmtree(scratch)
    shard = next(checkpoint.glob("*.safetensors"))
    how = "copy-on-write clone" if _clones(shard, scratch.with_suffix(".probe")) else "copy (no reflink here)"
    return {"algorithm": digests.ALGORITHM, "bytes": digests.total_bytes(record), "digest_s": min(seconds),
            "threads": digests.THREADS, "copy_s": min(copies), "how": how}


def _clones(src: Path, dst: Path) -> bool:
    import fcntl

    from thinkswitch.store.cache import FICLONE

    try:
        with open(src, "rb") as fs, open(dst, "wb") as fd:
            fcntl.ioctl(fd.fileno(), FICLONE, fs.fileno())
        return True
    except OSError:
        return False
    finally:
        dst.unlink(missing_ok=True)


def timed_thinkswitch(*overrides: str) -> float:
    """Seconds of one `thinkswitch` process (imports included) with `overrides`, on the cached testbed pair."""
    env = {**os.environ, "THINKSWITCH_CACHE": str(CACHE)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "thinkswitch.cli", *overrides], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def bench_sweep(work: Path, points: str, extra: list[str] = (), repeats: int = 2) -> None:
    """A 1-iteration `merge.t` sweep without the stage cache and with a new one, `repeats` times in turn; the
    best time of each (this machine's speed drifts by 10-20% over minutes: the best is the steadiest measure)."""
    args = ["--multirun", f"merge.t={points}", "iterations=1", "tracking.mode=disabled", *extra]
    times: dict[str, list[float]] = {"without cache": [], "with cache": []}
    for rep in range(repeats):
        for label, cache in (("without cache", "null"), ("with cache", str(work / f"stages_{rep}"))):
            out = work / f"{label.replace(' ', '_')}_{rep}"
            times[label].append(timed_thinkswitch(*args, f"stage_cache={cache}", f"hydra.sweep.dir={out}"))
    n = len(points.split(","))
    for label, runs in times.items():
        line(f"sweep: {n}-point t sweep, {label} (best of {repeats})", min(runs), "s",
             "runs: " + ", ".join(f"{t:.1f}" for t in runs))
    line("sweep: without / with the stage cache", min(times["without cache"]) / min(times["with cache"]), "x",
         "goal >= 2.5")
    stages = {}
    for summary in (work / "with_cache_0").rglob("summary.json"):
        for stage, sec in json.loads(summary.read_text())["stage_seconds"].items():
            stages[stage] = stages.get(stage, 0.0) + sec
    print("sweep (with cache), seconds by stage over all jobs:", {k: round(v, 1) for k, v in stages.items()})


SHARED = ("iter_00/evaluate_instruct", "iter_00/evaluate_thinking", "iter_01/generate", "iter_01/distill",
          "iter_01/evaluate_instruct")  # the stages a t sweep's jobs share


def bench_parallel(work: Path, points: str) -> None:
    """A t sweep run 2 jobs at a time (joblib launcher), with a shared stage cache and without."""
    n = len(points.split(","))
    args = ["--multirun", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "num_threads=1",
            f"merge.t={points}", "iterations=1", "tracking.mode=disabled"]
    times = {}
    for label, cache in (("without cache", "null"), ("with cache", str(work / "parallel_stages"))):
        out = work / f"parallel_{label.replace(' ', '_')}"
        times[label] = timed_thinkswitch(*args, f"stage_cache={cache}", f"hydra.sweep.dir={out}")
        line(f"parallel: {n}-point t sweep, n_jobs=2, {label}", times[label], "s")
        print(f"parallel ({label}): times each shared stage ran over the {n} jobs:", stage_runs(out),
              "(goal: 1 each)" if cache != "null" else "")
    line("parallel: without / with the stage cache", times["without cache"] / times["with cache"], "x")


def stage_runs(sweep: Path) -> dict:
    """How many of a sweep's jobs computed each shared stage (its marker, without a `cache/<stage>` metric)."""
    runs = dict.fromkeys(SHARED, 0)
    for job in (p for p in sweep.iterdir() if (p / "summary.json").exists()):
        for stage in SHARED:
            it, name = stage.split("/")
            metrics = json.loads((job / it / "metrics.json").read_text())
            runs[stage] += f"cache/{name}" not in metrics
    return runs


def bench_demo(work: Path) -> None:
    """The default experiment (what `make demo` runs, testbed already built), broken down by stage."""
    seconds = timed_thinkswitch("tracking.mode=disabled", "stage_cache=null", f"hydra.run.dir={work / 'demo'}")
    line("demo: wall time (process, imports included)", seconds, "s")
    summary = json.loads((work / "demo" / "summary.json").read_text())
    for stage, sec in summary["stage_seconds"].items():
        line(f"demo: {stage}", sec, "s", "all iterations")


SECTIONS = ("generate", "distill", "merge", "demo", "sweep", "parallel", "vllm", "cb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test of the benchmark)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run these sections only")
    parser.add_argument("--sweep-args", nargs="*", default=[], help="extra overrides for both sweeps")
    args = parser.parse_args()
    import platform

    import torch

    from thinkswitch.setup import resolve_pair

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    if args.quick:
        print("--quick: a smoke test; at these sizes fixed costs dominate and the ratios are not the goals' measure")
    pair = resolve_pair(compose([]).model, CACHE)
    points = "0.1,0.3" if args.quick else "0.05,0.1,0.2,0.3"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sections = {
            "generate": lambda: bench_generate(pair, 64 if args.quick else 512),
            "distill": lambda: bench_distill(pair, work, 64 if args.quick else 512),
            "merge": lambda: bench_merge(work, 256 if args.quick else 1024, 2 if args.quick else 8),
            "demo": lambda: None if args.quick else bench_demo(work),
            "sweep": lambda: bench_sweep(work, points, args.sweep_args, 1 if args.quick else 2),
            "parallel": lambda: bench_parallel(work, points),
            "vllm": lambda: bench_vllm(pair, work, args.quick),
            "cb": lambda: bench_cb(work, args.quick),  # continuous batching / static HF on the ragged case
        }
        for name in SECTIONS:
            if name in args.only:
                sections[name]()
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
