"""Ctrl-C (SIGINT) handled otherwise where a KeyboardInterrupt would do harm: held while a run's
epoch files are written (they belong together), or ending the command line at once while torch
initialises (an exception raised within its C++ start-up aborts the process or is lost).

Free of torch, so that the command line can use it before torch is imported.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["interrupts_held", "sigint_handled"]


@contextmanager
def sigint_handled(handler: Callable[[int, FrameType | None], Any]) -> Iterator[bool]:
    """SIGINT handled by ``handler`` in the block, the handler it had restored after; yields
    whether it is. Only the main thread receives signals: in another, or where the handler was
    not set from Python (so cannot be restored), the block runs as it is and yields False."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield False
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield True
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT until the block ends, then deliver it to the handler it had (by default a
    KeyboardInterrupt, raised as the block ends, also where the block raised)."""
    held: list[int] = []
    try:
        with sigint_handled(lambda signum, frame: held.append(signum)):
            yield
    finally:
        if held:
            signal.raise_signal(signal.SIGINT)
