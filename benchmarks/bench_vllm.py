"""vLLM (generation.backend=vllm) against the HF backend, on the same checkpoint and prompts.

    python -m benchmarks.bench_vllm [--quick]      (from the repository root; also a section of benchmarks/bench.py)

Three cases. The first two print tokens/s of vLLM and HF, their ratio, and vLLM's engine start-up separately
(loading the engine is a fixed cost per checkpoint per stage; the tokens/s exclude it and HF's load):
  testbed   the testbed's thinking checkpoint on its task prompts, its sampling settings
            (temperature 0.6, up to 96 new tokens; answers are 40-50 tokens): the framework's HF
            backend (`generate_texts`, batches of generation.batch_size) vs `VLLMBackend.generate`.
  ragged    a random Qwen3 (~25M parameters, built here, saved to a temp dir), greedy, where every
            prompt's answer has its own length, drawn log-uniformly from [16, 128] tokens with --quick (as thinking
            traces stop at very different lengths; 16-512 in the full run). HF: batched `generate` (batch 64, prompts
            sorted by length as the framework does) with a logits processor that forbids EOS before
            the row's length and forces it there, so a finished row idles until its batch's longest
            ends. vLLM: the same lengths as per-request `max_tokens` with `ignore_eos`. Both generate
            exactly the drawn number of tokens per prompt.
The third prints what thinkswitch's vLLM path costs over vLLM itself (goal >= 0.95x):
  overhead  `VLLMBackend.generate` (tokenize here, the worker process, JSON lines, each finished request streamed
            back, decoded here) vs a bare `vllm.LLM.generate` on the same text prompts, sampling and per-request
            seeds, same engine arguments and environment (engine in-process), run by `.venv-vllm/bin/python
            -m benchmarks.programs.bare_vllm`. The testbed's thinking checkpoint, its sampling; best of 3 timed
            calls each after a warm-up; the ratio is bare seconds / backend seconds for the same answers.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import CACHE, ROOT, compose, line, offline, random_qwen3


def _report(case: str, hf_tps: float, vllm_tps: float, startup: float, note: str = "") -> None:
    line(f"vllm [{case}]: HF backend", hf_tps, "tokens/s", note)
    line(f"vllm [{case}]: vLLM backend", vllm_tps, "tokens/s", "engine start excluded")
    line(f"vllm [{case}]: vLLM / HF", vllm_tps / hf_tps, "x")
    line(f"vllm [{case}]: vLLM engine start-up", startup, "s", "once per checkpoint and stage")


def bench_testbed(pair, n: int) -> None:
    import torch

    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.hf import generate_texts
    from thinkswitch.engines.models import load_model
    from thinkswitch.engines.vllm_backend import VLLMBackend

    cfg = compose()
    sampling, batch, cpu = cfg.model.sampling.thinking, cfg.generation.batch_size, torch.device("cpu")
    backend = VLLMBackend.load(pair.thinking, model_cfg=cfg.model, device=cpu, gen_cfg=cfg.generation)
    try:
        tok = backend.tokenizer
        prompts = [chat_prompt(tok, ex["prompt"]) for ex in task_examples(n, 5, "train", TestbedSpec())]
        backend.generate(prompts[:batch], sampling, seed=1)  # warm-up
        t0 = time.perf_counter()
        ours = backend.generate(prompts, sampling, seed=0)
        vllm_tps = sum(r["tokens"] for r in ours) / (time.perf_counter() - t0)
    finally:
        backend.close()
    model = load_model(pair.thinking, cfg.model, cpu)
    generate_texts(model, tok, prompts[:batch], sampling, batch, 1)  # warm-up
    t0 = time.perf_counter()
    ref = generate_texts(model, tok, prompts, sampling, batch, 0)
    hf_tps = sum(r["tokens"] for r in ref) / (time.perf_counter() - t0)
    _report("testbed", hf_tps, vllm_tps, backend.startup_s,
            f"{n} prompts, {sum(r['tokens'] for r in ref) / n:.0f} tokens/answer")


def bench_ragged(work: Path, n: int, max_len: int) -> None:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.models import load_model
    from thinkswitch.engines.vllm_backend import VLLMBackend

    path = work / "random_qwen3"
    params = random_qwen3(path, 512, 8)
    cfg = compose()
    cpu = torch.device("cpu")
    rng = random.Random(0)
    lengths = [int(math.exp(rng.uniform(math.log(16), math.log(max_len)))) for _ in range(n)]
    note = (f"{params / 1e6:.0f}M params, {n} prompts, lengths 16-{max_len} log-uniform "
            f"(mean {sum(lengths) / n:.0f}, max {max(lengths)})")

    backend = VLLMBackend.load(str(path), model_cfg=cfg.model, device=cpu, gen_cfg=cfg.generation)
    try:
        tok = backend.tokenizer
        prompts = [chat_prompt(tok, ex["prompt"]) for ex in task_examples(n, 5, "train", TestbedSpec())]
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]

        def run_vllm(k: int) -> int:
            per = [{"temperature": 0.0, "max_tokens": length, "ignore_eos": True} for length in lengths[:k]]
            out: list = []
            backend.worker.send(cmd="generate", prompts=ids[:k], params=per, seeds=list(range(k)), n=1)
            backend.worker.receive(out.extend)  # [position, [sample]] of each request as it finishes
            return sum(len(samples[0]["ids"]) for _, samples in out)

        run_vllm(8)  # warm-up
        t0 = time.perf_counter()
        tokens = run_vllm(n)
        vllm_tps = tokens / (time.perf_counter() - t0)
        assert tokens == sum(lengths), (tokens, sum(lengths))
    finally:
        backend.close()

    eos = tok.eos_token_id

    class StopAt(LogitsProcessor):
        """Row i emits EOS exactly at its own length (forbidden before)."""

        def __init__(self, rows: list[int], prompt_len: int):
            self.rows, self.prompt_len = torch.tensor(rows), prompt_len

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.prompt_len  # tokens generated so far
            at = (self.rows - 1) == step
            scores[:, eos] = torch.where(at, scores[:, eos], torch.tensor(float("-inf")))
            forced = torch.full_like(scores, float("-inf"))
            forced[:, eos] = 0.0
            return torch.where(at[:, None], forced, scores)

    model = load_model(str(path), cfg.model, cpu)
    order = sorted(range(n), key=lambda i: len(prompts[i]))
    batch = 64

    def run_hf(idx: list[int]) -> int:
        tokens = 0
        with torch.inference_mode():
            for start in range(0, len(idx), batch):
                rows = idx[start:start + batch]
                enc = tok([prompts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
                stop = StopAt([lengths[i] for i in rows], enc["input_ids"].shape[1])
                out = model.generate(**enc, do_sample=False, max_new_tokens=max(lengths[i] for i in rows),
                                     logits_processor=LogitsProcessorList([stop]), pad_token_id=tok.pad_token_id,
                                     eos_token_id=eos, temperature=None, top_p=None, top_k=None)
                for row in out[:, enc["input_ids"].shape[1]:].tolist():
                    tokens += row.index(eos) + 1 if eos in row else len(row)
        return tokens

    run_hf(order[:8])  # warm-up
    t0 = time.perf_counter()
    tokens = run_hf(order)
    hf_tps = tokens / (time.perf_counter() - t0)
    assert tokens == sum(lengths), (tokens, sum(lengths))
    _report("ragged", hf_tps, vllm_tps, backend.startup_s, note)


def bench_overhead(pair, n: int, repeats: int = 3) -> None:
    """Both engines loaded side by side, timed calls alternating (backend, bare, backend, ...) so that a load
    that changes during the run weighs on both alike; the best of `repeats` of each."""
    import json
    import subprocess

    import torch

    from thinkswitch.config import TestbedSpec
    from thinkswitch.data.testbed_task import task_examples
    from thinkswitch.engines.chat import chat_prompt
    from thinkswitch.engines.seeds import request_seeds
    from thinkswitch.engines.vllm_backend import VLLMBackend, effective_sampling, venv_process_env, worker_env
    from thinkswitch.engines.vllm_options import engine_args, vllm_venv

    cfg = compose()
    sampling, cpu, warmup = cfg.model.sampling.thinking, torch.device("cpu"), cfg.generation.batch_size
    backend = VLLMBackend.load(pair.thinking, model_cfg=cfg.model, device=cpu, gen_cfg=cfg.generation)
    env = venv_process_env() | worker_env(cpu)
    bare_log = tempfile.TemporaryFile("w+")
    bare_proc = subprocess.Popen([str(vllm_venv() / "bin" / "python"), "-m", "benchmarks.programs.bare_vllm"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=bare_log, text=True, env=env,
                                 cwd=str(ROOT))
    try:
        prompts = [chat_prompt(backend.tokenizer, ex["prompt"]) for ex in task_examples(n, 5, "train", TestbedSpec())]
        params = effective_sampling(sampling, backend.gen_config) | {"stop_token_ids": sorted(backend.eos_ids)}
        request = {"engine_args": engine_args(dict(cfg.generation.vllm), pair.thinking, cfg.model, cpu),
                   "prompts": prompts, "params": params, "seeds": request_seeds(0, range(n)), "warmup": warmup}

        def bare_call() -> dict:
            bare_proc.stdin.write(json.dumps(request) + "\n" if not bare_call.sent else "run\n")
            bare_proc.stdin.flush()
            reply = bare_proc.stdout.readline()
            if not reply:
                bare_log.seek(0)
                raise RuntimeError(f"bare vLLM exited (code {bare_proc.wait()}):\n{bare_log.read()[-3000:]}")
            bare_call.sent = True
            return json.loads(reply)

        bare_call.sent = False
        bare_call()  # loads and warms up
        backend.generate(prompts[:warmup], sampling, seed=1)
        ours, bare_s = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            records = backend.generate(prompts, sampling, seed=0)
            ours.append(time.perf_counter() - t0)
            result = bare_call()
            bare_s.append(result["seconds"])
    finally:
        backend.close()
        if bare_proc.stdin:
            bare_proc.stdin.close()
        bare_proc.wait(timeout=60)
    tokens = sum(r["tokens"] for r in records)
    assert result["tokens"] == tokens, ("not the same answers", result["tokens"], tokens)
    note = f"{n} prompts, {tokens / n:.0f} tokens/answer, best of {repeats}, alternating"
    line("vllm [overhead]: bare vLLM LLM.generate", tokens / min(bare_s), "tokens/s", note)
    line("vllm [overhead]: thinkswitch vLLM backend", tokens / min(ours), "tokens/s", "worker, streamed, decoded")
    line("vllm [overhead]: backend / bare vLLM", min(bare_s) / min(ours), "x", "goal >= 0.95")


def bench_vllm(pair, work: Path, quick: bool) -> None:
    from thinkswitch.engines.vllm_options import vllm_venv

    if not (vllm_venv() / "bin" / "python").exists():
        print(f"vllm: skipped ({vllm_venv()} not found; `make install-vllm`)")
        return
    bench_testbed(pair, 64 if quick else 512)
    bench_ragged(work, 16 if quick else 64, 128 if quick else 512)
    bench_overhead(pair, 64 if quick else 512)


def main() -> None:
    import argparse

    from thinkswitch.setup import resolve_pair

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    offline()
    pair = resolve_pair(compose().model, CACHE)
    with tempfile.TemporaryDirectory() as tmp:
        bench_vllm(pair, Path(tmp), args.quick)


if __name__ == "__main__":
    main()
