"""Keep third-party worker threads away from PostgreSQL's signals."""

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Block all signals in this thread; threads started meanwhile inherit the mask.

    A PostgreSQL backend expects its signals (query cancel, latch wake-ups) on its
    own thread. numpy (OpenBLAS), ONNX Runtime and tokenizers start worker threads
    when imported or first used: start them inside this block.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
