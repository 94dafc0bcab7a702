"""A bare vLLM engine, run by `.venv-vllm/bin/python -m benchmarks.programs.bare_vllm` (from the repository root;
it imports vLLM and the standard library only): it loads the engine of stdin's first line (engine arguments, text
prompts, SamplingParams fields, seeds, how many prompts warm it up) and answers {"ready"}; then each further line
times one `LLM.generate` of the same request and prints {"seconds", "tokens"}.
"""

import json
import os
import sys
import time


def main() -> None:
    from vllm import LLM, SamplingParams

    out = os.fdopen(os.dup(1), "w", buffering=1)  # the replies; whatever vLLM prints goes to stderr
    os.dup2(2, 1)
    req = json.loads(sys.stdin.readline())
    llm = LLM(**req["engine_args"])
    params = [SamplingParams(seed=seed, **req["params"]) for seed in req["seeds"]]
    llm.generate(req["prompts"][:req["warmup"]], params[:req["warmup"]], use_tqdm=False)
    print(json.dumps({"ready": True}), file=out, flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        outs = llm.generate(req["prompts"], params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        print(json.dumps({"seconds": seconds, "tokens": sum(len(c.token_ids) for o in outs for c in o.outputs)}),
              file=out, flush=True)
    os._exit(0)  # the interpreter's teardown frees nothing the OS does not


if __name__ == "__main__":
    main()
