"""Ctrl-C or SIGTERM during the eval: stop within a second or two and keep what is done.

The first signal sets a flag that the runners read before each reply (GGUF) and
at each decoding step (HF, through a stopping criterion), ends the llama.cpp
processes this one started, which cuts the replies in flight, and raises Stopped
in the main thread, whatever it was doing. Replies finished
before it are already in the reply cache; a reply cut short is never put there.
The eval then ends with TrainingInterrupted (exit 130), whose one line says how
to continue. A second signal is not caught, so a stuck eval can still be killed.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading

from fintune import llama_cpp
from fintune.errors import TrainingInterrupted

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STOP = threading.Event()


class Stopped(Exception):
    """Raised in the eval once a signal came; stop_on_signal turns it into TrainingInterrupted."""


def requested() -> bool:
    return _STOP.is_set()


def check() -> None:
    if _STOP.is_set():
        raise Stopped


class _Handler:
    received: str | None = None

    def __call__(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        _STOP.set()
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        log.warning("eval: %s received: stopping", self.received)
        # not here: a handler that waits on a lock the interrupted code holds never returns
        threading.Thread(target=llama_cpp.terminate_children, daemon=True).start()
        # and the main thread stops whatever it does (loading a tokenizer or a model, waiting
        # on the generating threads, which the flag stops), as KeyboardInterrupt would
        raise Stopped


def hf_stopping_criteria():
    """A transformers stopping criterion that ends every sequence of the batch once a
    signal came (transformers/generation/stopping_criteria.py: StoppingCriteria.__call__
    returns one bool per sequence)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class OnSignal(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), _STOP.is_set(), device=input_ids.device, dtype=torch.bool)

    return StoppingCriteriaList([OnSignal()])


@contextlib.contextmanager
def stop_on_signal(how_to_continue: str):
    """Within: a signal stops the eval; any error raised after it (a reply cut, a tool
    ended) becomes TrainingInterrupted with `how_to_continue`, and so does a signal that
    came after the work inside ended: the caller writes its report inside. Signal handlers can only
    be set from the main thread; elsewhere nothing changes."""
    handler = _Handler()
    _STOP.clear()
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS} if main else {}
    try:
        yield handler
        check()  # a signal after the last reply: the eval still ends as stopped, its report unwritten
    except Exception:
        if handler.received:
            raise TrainingInterrupted(f"eval stopped by {handler.received}; {how_to_continue}") from None
        raise
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
        _STOP.clear()
