"""What the bad-input property test (tests/runs/test_bad_input_property.py) and the audit
(benchmarks/bad_inputs.py) share to run ``avi`` in this process: a time limit on a command and
the directory it runs in."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TooSlow", "time_limit", "working_directory"]


class TooSlow(Exception):
    """A command still running after its time limit."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise :class:`TooSlow` in the main thread once ``seconds`` pass (SIGALRM)."""

    def expire(signum: int, frame: Any) -> None:
        raise TooSlow(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run in ``path``: the paths a command makes by default (``runs/``, ``--out ""``) land there."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
