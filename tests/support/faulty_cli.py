"""`python -m tests.support.faulty_cli <iter>/<stage> [overrides...]`: `thinkswitch`, SIGKILLed at the worst moment of
one stage: after it wrote its outputs, before its completion marker (through the runner's test hook)."""

import os
import signal
import sys

from thinkswitch.cli import main
from thinkswitch.store import runner

TARGET = sys.argv.pop(1)


def kill_at_target(it, stage: str) -> None:
    if f"{it.root.name}/{stage}" == TARGET:
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    runner.AFTER_OUTPUTS.append(kill_at_target)
    main()
