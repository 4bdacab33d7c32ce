"""The project's own error types.

A FintuneError is one the user can fix: bad input, a missing file or tool, a
setting that cannot work on this machine. The command line prints its message
on one line. Any other exception is a bug: it prints its traceback, and the
run manifest keeps it.
"""
from __future__ import annotations

import logging

log = logging.getLogger("fintune")


class FintuneError(Exception):
    """Base of every error whose message tells the user what to change."""


class UsageError(FintuneError, ValueError):
    """A setting, model or file that cannot be used as given; the message says why."""


class MissingError(FintuneError, FileNotFoundError):
    """An input the step needs is not there; the message names it and what makes it."""


class StageProcessError(FintuneError):
    """A stage's own process ended without finishing; it has already printed why
    (one line for a user error, a traceback for a bug)."""

    def __init__(self, stage: str, returncode: int, error: str):
        super().__init__(f"stage {stage} failed in its process (exit {returncode})")
        self.stage, self.returncode, self.error = stage, returncode, error


class TrainingInterrupted(FintuneError, RuntimeError):
    """A stage stopped on Ctrl-C or SIGTERM after saving what it had (a checkpoint,
    the cached replies); the message says how to continue."""


def report(e: FintuneError) -> int:
    """Print an error the user can fix on one line and return the command's exit code:
    2 for a user error, 130 for an interruption, a stage process's own code for a bug
    there (its traceback is above and in the run manifest). Bugs are never caught here."""
    if isinstance(e, StageProcessError):
        log.error("%s; its %s is above and in the run manifest", e,
                  "message" if e.returncode == 2 else "traceback")
        return 2 if e.returncode == 2 else 1
    if isinstance(e, TrainingInterrupted):
        log.error("%s", e)
        return 130
    log.error("error: %s", e)
    return 2
