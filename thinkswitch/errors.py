"""The errors a user can fix: each message names the key, file, line or value at fault.

The CLI prints a `ThinkSwitchError` as one line and exits non-zero (the traceback goes to the
log file only); anything else is a bug or a library failure and keeps its traceback.
"""

from __future__ import annotations


class ThinkSwitchError(Exception):
    """A known failure whose message says what is wrong and where."""

    exit_code = 1


class ConfigError(ThinkSwitchError, ValueError):
    """A configuration value that cannot work; the message names the key."""

    exit_code = 2


class DataError(ThinkSwitchError, ValueError):
    """A data file or dataset that cannot be read, or records without the fields asked for."""

    exit_code = 2


class StageError(ThinkSwitchError, RuntimeError):
    """A stage that cannot go on with what it was given (e.g. every generation was dropped)."""


class DiskFull(ThinkSwitchError, OSError):
    """A write that found no space left on its device (`DiskFull(errno.ENOSPC, message)`); the message names
    the path and the space it needed. An OSError still, so code that tolerates a failed write (the stage
    cache) goes on tolerating it."""

    def __str__(self) -> str:
        return str(self.strerror)


class RunInUse(ThinkSwitchError):
    """Another process holds the run directory's lock; the message names it (pid, host, start time)."""

    exit_code = 3
