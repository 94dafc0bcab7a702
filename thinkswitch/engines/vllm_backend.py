"""`generation.backend=vllm`: generation by vLLM (continuous batching, paged KV cache, prefix caching).

vLLM pins an older transformers than thinkswitch, so it is installed in its own venv
(`make install-vllm` -> `.venv-vllm`) and this process never imports it. `VLLMBackend.load` starts
`.venv-vllm/bin/python -m thinkswitch.engines.vllm_worker` (one process per loaded checkpoint), which
builds the engine; `generate` sends it token ids and sampling settings and decodes the token ids
it sends back exactly as the HF backend does (`generate.generate_texts`); `close` stops it, and
the process exiting is what frees the engine's memory (GPU or CPU) before the next stage.

Resume: the worker streams each request as it finishes; `generate` hands them to `on_batch` (the stage's
partial file) at once and sends the worker only the prompts `done` lacks. Request i is seeded from a hash
of (seed, i) alone, so a resumed stage ends with what an uninterrupted one would have.

Failures: a worker that dies or reports an error raises `WorkerError` (a `StageError`: one line on the
console) naming the worker's log file, which is then kept; a worker that exits cleanly deletes it.

Engine settings are `generation.vllm.*`, passed to vLLM's `EngineArgs`; they are checked and completed in the
main process by `engines.vllm_options`.

(Over 300 lines: the worker process and the backend that drives it are one conversation; split, each part would
import the other's details.)
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from thinkswitch.config import SamplingConfig
from thinkswitch.engines import decoding  # one decoder for every engine
from thinkswitch.engines.seeds import request_seeds
from thinkswitch.engines.vllm_options import (
    REPO_ROOT,
    _missing_venv,
    check_vllm_options,
    engine_args,
    nf4_error,
    startup_memory_error,
    vllm_venv,
)
from thinkswitch.errors import ConfigError, StageError

log = logging.getLogger(__name__)

def worker_env(device) -> dict:
    """Environment of the worker. The engine runs inside the worker process (no EngineCore
    process: it starts faster and exits at once, and its exit frees everything), unless
    VLLM_ENABLE_V1_MULTIPROCESSING is set. `device=cuda:N`: the worker sees that one GPU."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")}
    if device.type == "cuda" and device.index is not None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else None
        env["CUDA_VISIBLE_DEVICES"] = ids[device.index] if ids and device.index < len(ids) else str(device.index)
    return env


def _quantization(gen_cfg) -> dict:
    """EngineArgs for `generation.quantization`: nf4 only with a vLLM that has bitsandbytes (validate.py refuses it
    first; vLLM 0.32 has none)."""
    if getattr(gen_cfg, "quantization", "none") != "nf4":
        return {}
    if nf4_error():
        raise ConfigError(nf4_error())
    return {"quantization": "bitsandbytes"}


def check_startup_memory(device, args: Mapping) -> None:
    """Before a worker starts on a GPU: this process's cached CUDA blocks released (after a QLoRA run the allocator
    keeps gigabytes no tensor uses, which vLLM would count as taken), then vLLM's own start-up rule checked on the
    free memory (`vllm_options.startup_memory_error`, which holds with `kv_cache_memory_bytes` too): a ConfigError
    with the numbers, not a worker's traceback."""
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    error = startup_memory_error(free, total, float(args.get("gpu_memory_utilization", 0.9)),
                                 held=torch.cuda.memory_reserved(device))
    if error:
        raise ConfigError(error)


def effective_sampling(sampling: SamplingConfig, gen_config) -> dict:
    """vLLM SamplingParams fields with HF `generate`'s semantics: greedy unless do_sample; an unset
    field falls back to the checkpoint's generation_config.json, then to transformers' defaults; the checkpoint's
    `min_new_tokens` is vLLM's `min_tokens` (EOS and the stop ids held off)."""
    out: dict[str, Any] = {"max_tokens": int(sampling.max_new_tokens)}
    held = getattr(gen_config, "min_new_tokens", None)  # EOS held off, as `generate` does (vLLM: min_tokens)
    if held:
        out["min_tokens"] = min(int(held), out["max_tokens"])
    if not sampling.do_sample:
        return out | {"temperature": 0.0}
    hf_defaults = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "min_p": None}
    for key, default in hf_defaults.items():
        value = getattr(sampling, key)
        if value is None:
            value = getattr(gen_config, key, None)
        if value is None:
            value = default
        if value is not None:
            out[key] = value
    if out.get("top_k") is not None and out["top_k"] <= 0:
        out["top_k"] = 0  # disabled in both libraries
    penalty = getattr(gen_config, "repetition_penalty", None)
    if penalty not in (None, 1.0):
        out["repetition_penalty"] = penalty
    return out


class WorkerError(StageError):
    """The vLLM worker failed or died; one line, with vLLM's message if it sent one, naming the worker's log
    (kept)."""


_LIVE: set[_Worker] = set()  # held until stopped: a worker nothing else holds is still stopped at exit


def group_processes(pgid: int) -> list[int]:
    """Live processes of a process group (zombies, which hold no memory, excluded)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the group as a whole
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
    pids = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(d.name))
    return pids


def _end_group(proc: subprocess.Popen, pgid: int) -> None:
    """SIGTERM, then SIGKILL, what is left of a worker's process group, each time waiting until the whole group is
    gone (not only its leader: vLLM's engine process, in the same group, can outlive it by a moment)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if not group_processes(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, so that it does not linger as ours
            if not group_processes(pgid):
                return
            time.sleep(0.05)


def venv_process_env() -> dict[str, str]:
    """The environment of a process of `.venv-vllm`'s Python: this one's, less what points at this interpreter's
    packages (its venv, and a PYTHONPATH that may hold packages built for another Python), with the repository on
    the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return env | {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


class _Worker:
    """One `.venv-vllm/bin/python -m thinkswitch.engines.vllm_worker` process (its own process group)."""

    def __init__(self, env_extra: Optional[dict] = None):
        python = vllm_venv() / "bin" / "python"
        if not python.exists():
            raise ConfigError(_missing_venv())
        fd, self.log_path = tempfile.mkstemp(prefix="thinkswitch-vllm-", suffix=".log")
        env = venv_process_env() | (env_extra or {})
        self.proc = subprocess.Popen([str(python), "-m", "thinkswitch.engines.vllm_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=fd, env=env, text=True,
                                     start_new_session=True, cwd=str(REPO_ROOT))
        self.pgid = self.proc.pid  # start_new_session: the worker leads its own group
        self.failed = False
        _LIVE.add(self)
        os.close(fd)
        log.info("vLLM worker pid %d started (log: %s)", self.proc.pid, self.log_path)

    def send(self, **msg) -> None:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died()

    def _fail(self, what: str) -> WorkerError:
        self.failed = True  # its log is kept (`stop`)
        return WorkerError(f"{what}; its log: {self.log_path}")

    def _died(self):
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        code = self.proc.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited (code {code})"
        raise self._fail(f"the vLLM worker (pid {self.proc.pid}) {how}")

    def receive(self, on_outputs: Optional[Callable[[list], None]] = None) -> dict:
        """The next reply that is not an `outputs` event (those go to `on_outputs`); errors raise WorkerError."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self._died()
            msg = json.loads(line)
            event = msg.get("event")
            if event == "outputs":
                if on_outputs is not None:
                    on_outputs(msg["results"])
                continue
            if event == "error":
                raise self._fail(f"vLLM worker: {msg['message']}")
            return msg

    def processes(self) -> list[int]:
        return group_processes(self.pgid)

    def alive(self) -> bool:
        return bool(self.processes())

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "close"}) + "\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("vLLM worker %d did not exit in %.0f s; terminating it", self.proc.pid, timeout)
        _end_group(self.proc, self.pgid)
        if self.proc.stdout:
            self.proc.stdout.close()
        _LIVE.discard(self)
        if self.proc.returncode == 0 and not self.failed:
            Path(self.log_path).unlink(missing_ok=True)
        else:
            log.info("vLLM worker log kept: %s", self.log_path)


@atexit.register
def _stop_all() -> None:
    for worker in list(_LIVE):
        worker.stop(timeout=10.0)


def _pending(done: Optional[Mapping[int, dict]], prompts: int, n: int) -> tuple[list, list[int]]:
    """The results `done` holds, by index (None where missing), and the prompts with a sample missing."""
    results = decoding.results_from(done, prompts * n)
    return results, [p for p in range(prompts) if any(results[p * n + s] is None for s in range(n))]


def _generation_config(path: str, model_cfg):
    """The checkpoint's generation_config.json (transformers' defaults without one)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path, revision=model_cfg.revision)
    except OSError:  # no generation_config.json
        return GenerationConfig()


class VLLMBackend:
    """Generation by vLLM in a worker process; see the module docstring."""

    def __init__(self, worker: _Worker, tokenizer, gen_config, eos_ids: set[int], startup_s: float):
        self.worker, self.tokenizer, self.gen_config = worker, tokenizer, gen_config
        self.eos_ids, self.startup_s = eos_ids, startup_s
        self.drop = decoding.drop_tokens(tokenizer)
        self._finalizer = weakref.finalize(self, worker.stop)

    @classmethod
    def load(cls, path: str, *, model_cfg, device, gen_cfg) -> "VLLMBackend":
        from thinkswitch.engines.models import load_tokenizer

        options = dict(gen_cfg.vllm or {})
        errors = check_vllm_options(options)
        if errors:
            raise ConfigError("; ".join(errors))
        args = {**engine_args(options, path, model_cfg, device), **_quantization(gen_cfg)}
        tokenizer = load_tokenizer(path, model_cfg)
        gen_config = _generation_config(path, model_cfg)
        eos_ids = decoding.eos_ids(gen_config, tokenizer)
        if device.type == "cuda":
            check_startup_memory(device, args)
        worker = _Worker(worker_env(device))
        try:  # up to the backend that owns it: a stop (SIGTERM) anywhere before then still stops the worker
            worker.send(cmd="load", engine_args=args)
            ready = worker.receive()
            log.info("vLLM %s engine for %s ready in %.1f s", ready.get("vllm_version"), path, ready["seconds"])
            return cls(worker, tokenizer, gen_config, eos_ids, ready["seconds"])
        except BaseException:
            worker.stop(timeout=10.0)
            raise

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig, *, seed: int, n: int = 1,
                 desc: str = "generate", on_batch: Optional[Callable[[dict[int, dict]], None]] = None,
                 done: Optional[Mapping[int, dict]] = None) -> list[dict]:
        """`n` completions per chat-formatted prompt, prompt-major (see `hf.GenerationBackend.generate`).

        Request i is seeded with `seeds.batch_seed(seed, i)` (its n samples draw from that one generator), so the
        same seed gives the same outputs whatever else is in the batch, a resumed call what an uninterrupted one
        would have, and runs with other seeds draw streams unrelated to this one's (not shifted copies).
        `done` (results by index, prompt i's sample s at i * n + s) are returned as given; only prompts with a
        sample missing are sent to the engine. `on_batch` gets each engine step's finished requests, by index.
        """
        from tqdm.auto import tqdm

        total = len(prompts) * n
        results, todo = _pending(done, len(prompts), n)
        if not todo:
            return results  # type: ignore[return-value]
        ids = [self.tokenizer(prompts[p], add_special_tokens=False)["input_ids"] for p in todo]
        params = effective_sampling(sampling, self.gen_config) | {"stop_token_ids": sorted(self.eos_ids)}
        bar = tqdm(total=total, initial=total - len(todo) * n, desc=desc, unit="answer", leave=False)

        def finished(batch: list) -> None:
            new = {}
            for pos, outs in batch:
                if len(outs) != n:
                    raise self.worker._fail(f"vLLM returned {len(outs)} samples for a prompt, expected {n}")
                p = todo[pos]
                for s, out in enumerate(outs):
                    if results[p * n + s] is None:
                        new[p * n + s] = results[p * n + s] = decoding.decode(
                            out["ids"], self.eos_ids, self.tokenizer, self.drop)
            bar.update(len(batch) * n)
            if on_batch is not None and new:
                on_batch(new)

        try:
            self.worker.send(cmd="generate", prompts=ids, params=params, seeds=request_seeds(seed, todo), n=n)
            self.last_seconds = self.worker.receive(finished)["seconds"]
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM (`stopping`): the busy worker would not read `close` soon
            self.worker.stop(timeout=2.0)
            raise
        finally:
            bar.close()
        missing = sum(r is None for r in results)
        if missing:
            raise self.worker._fail(f"the vLLM worker finished without {missing} of {total} answers")
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the worker; its exit frees the engine's memory."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
