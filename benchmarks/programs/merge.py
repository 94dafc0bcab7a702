"""One merge of two checkpoints, by the framework's merge stage (`ours`) or a bare mergekit `run_merge` (`bare`),
with its time and memory: prints {"seconds", "rss_growth" (peak RSS over the RSS before), "anon_growth" (the same
for the anonymous, not file-backed, part, which the kernel cannot drop)}.

    python -m benchmarks.programs.merge ours|bare THINKING INSTRUCT OUT SHARD_BYTES
"""

import json
import sys
import threading
import time
from pathlib import Path

import torch  # noqa: F401  imported before the measurement starts
import yaml  # noqa: F401
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge

from benchmarks.common import compose, proc_status, reset_peak_rss
from tests.support.stage_inputs import stage_inputs
from thinkswitch.stages.merge import MergeInputs, merge, mergekit_config


def main(mode: str, thinking: str, instruct: str, out: str, shard: str) -> None:
    cfg = compose(["merge.t=0.3"])
    inputs = stage_inputs(MergeInputs, cfg, shard_size=int(shard), thinking=thinking, instruct=instruct, out=Path(out))
    reset_peak_rss()  # the peak (VmHWM) := the current RSS
    before, peak_anon, done = proc_status(), [0], threading.Event()

    def sample():  # the anonymous (non file-backed) part of RSS, which the kernel cannot drop
        while not done.wait(0.002):
            peak_anon[0] = max(peak_anon[0], proc_status()["RssAnon"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    if mode == "ours":
        merge(inputs)
    else:
        config = mergekit_config(cfg.merge, thinking, instruct)
        run_merge(MergeConfiguration.model_validate(config), out, MergeOptions(lazy_unpickle=False, quiet=True,
                  write_model_card=False))
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = proc_status()
    print(json.dumps({"seconds": seconds, "rss_growth": after["VmHWM"] - before["VmRSS"],
                      "anon_growth": max(peak_anon[0], after["RssAnon"]) - before["RssAnon"]}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
