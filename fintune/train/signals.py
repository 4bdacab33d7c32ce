"""SIGINT / SIGTERM during training: finish the current step, save a checkpoint,
stop cleanly. A second signal is not caught, so a stuck run can still be killed."""
from __future__ import annotations

import contextlib
import logging
import signal

from fintune.errors import TrainingInterrupted

log = logging.getLogger(__name__)
__all__ = ["TrainingInterrupted", "checkpoint_on_signal"]


class _Stopper:
    received: str | None = None

    def handler(self, signum, frame):
        self.received = signal.Signals(signum).name
        log.warning("train: %s received: saving a checkpoint after this step, then stopping", self.received)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)


def _callback(stopper: _Stopper):
    from transformers import TrainerCallback

    class SaveAndStop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if stopper.received:
                control.should_save = True
                control.should_training_stop = True
            return control

    return SaveAndStop()


@contextlib.contextmanager
def checkpoint_on_signal(trainer):
    stopper = _Stopper()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, stopper.handler)
    trainer.add_callback(_callback(stopper))
    try:
        yield stopper
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
