"""`python -m tests.support.faulty_memory <free bytes> <partial file name> <batches> [overrides...]`: `thinkswitch` on a
machine whose free memory reads `<free bytes>` (the memory plan's probe, so its KV token budget differs from this
machine's), SIGKILLed right after the `<batches>`-th batch was appended to the partial file `<partial file name>`
(`iter_00/eval_thinking.jsonl.partial`; 0: never killed)."""

import os
import signal
import sys

from thinkswitch.cli import main
from thinkswitch.engines import free_memory
from thinkswitch.store import partial

FREE, TARGET, KILL_AFTER = int(sys.argv.pop(1)), sys.argv.pop(1), int(sys.argv.pop(1))
batches = []


def kill_after(path, results) -> None:
    if f"{path.parent.name}/{path.name}" == TARGET:
        batches.append(len(results))
        if len(batches) == KILL_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    free_memory.free_memory = lambda device: FREE  # sizing.run_plan.plan_memory imports it when it plans
    partial.AFTER_BATCH.append(kill_after)
    main()
