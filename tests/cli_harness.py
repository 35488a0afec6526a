"""What the bad-input property test (tests/runs/test_bad_input_property.py), the audit
(benchmarks/bad_inputs.py) and other in-process CLI tests share to run ``avi`` in this process:
a time limit on a command, the directory it runs in, config values written as TOML, and a call
with its exit code checked."""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TooSlow", "avi_in_process", "time_limit", "toml_value", "working_directory"]


def avi_in_process(*args: str, code: int = 0) -> Any:
    """``avi ARGS`` in this process (typer's runner), its exit code checked against ``code``; the
    threads it sets restored."""
    import torch
    from typer.testing import CliRunner

    from avi.cli import app

    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == code, (result.output, result.exception)
    return result


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


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (inline tables for dicts)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(ch if ch.isprintable() and ch != "\x7f" else _escape(ch) for ch in escaped) + '"'


def _escape(ch: str) -> str:
    """A TOML escape of one character: \\uXXXX, or \\UXXXXXXXX past the basic plane."""
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
