"""Progress of long work on standard error, readable wherever it goes.

On a terminal, a live rich bar. Elsewhere (a batch job's log under SLURM or nohup, CI, a pipe)
plain lines: one each time the work passes another of its ``parts`` (10%), and one whenever
:func:`interval` seconds (30) pass without a line, each with the count, the throughput and the
time left. The throughput is measured from the work's first report, (n - n_0) / (t - t_0), and
shown once t - t_0 is at least :data:`MIN_SECONDS` (or the interval, if shorter): a first
refresh has no interval to speak of, and work that is over within a second prints no line.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["INTERVAL_VARIABLE", "MIN_SECONDS", "Rate", "Reporter", "describe", "interval", "reporter"]

#: the environment variable that sets the seconds between plain lines
INTERVAL_VARIABLE = "AVI_PROGRESS_SECONDS"
#: seconds between plain lines, unless :data:`INTERVAL_VARIABLE` says otherwise
INTERVAL = 30.0
#: the least interval, in seconds, over which a throughput is shown
MIN_SECONDS = 1.0
#: seconds between refreshes of a live bar (a refresh may read a running sum off the device)
REFRESH = 0.2

#: text of a part of the progress, made only when it is shown
Note = Callable[[], str]


def interval() -> float:
    """Seconds between plain lines: :data:`INTERVAL_VARIABLE` where it holds a number >= 0, else 30."""
    try:
        seconds = float(os.environ.get(INTERVAL_VARIABLE, ""))
    except ValueError:
        return INTERVAL
    return seconds if seconds >= 0 else INTERVAL


@dataclass
class Rate:
    """Throughput of work from its first report (t_0, n_0): (n - n_0) / (t - t_0), once t - t_0
    >= ``least`` seconds; None before."""

    least: float
    first: tuple[float, int] | None = None

    def report(self, done: int, now: float) -> float | None:
        """Take in a report of ``done`` units at time ``now``; the throughput so far."""
        if self.first is None:
            self.first = (now, done)
        return self.at(done, now)

    def at(self, done: int, now: float) -> float | None:
        """The throughput with ``done`` units at time ``now``, taking in no report."""
        if self.first is None:
            return None
        start, base = self.first
        return (done - base) / (now - start) if now > start and now - start >= self.least else None


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def describe(label: str, unit: str, done: int | None, total: int | None, rate: float | None, note: str = "") -> str:
    """One plain line: ``label: done/total unit (percent)  note  rate unit/s  ETA h:mm:ss`` (the
    parts known); ``done`` None, before any report."""
    parts = [f"{label}:" if done is None else f"{label}: {done:,}{f'/{total:,}' if total else ''} {unit}"]
    if done is not None and total:
        parts[0] += f" ({100 * done / total:.0f}%)"
    parts += [note] * bool(note)
    if rate is not None:
        parts.append(f"{rate:,.0f} {unit}/s" if rate >= 100 else f"{rate:.3g} {unit}/s")
        if total and done is not None and rate > 0:
            parts.append(f"ETA {clock(max(total - done, 0) / rate)}")
    return "  ".join(parts)


class Reporter(Protocol):
    """What a command reports its progress to: :meth:`start` a piece of work, :meth:`update` it,
    print a :meth:`line` of its own; a context manager around the work."""

    def __enter__(self) -> Reporter: ...

    def __exit__(self, *exc: object) -> None: ...

    def start(self, label: str, total: int | None = None, unit: str | None = None) -> None:
        """Begin the work ``label`` of ``total`` units (None: not yet known), counted in ``unit``
        (None: the reporter's)."""

    def update(self, done: int, total: int | None = None, note: Note | None = None) -> None:
        """``done`` units of the work so far (of ``total``, where it was not known); ``note``,
        more text to show, is called only when it is shown."""

    def line(self, text: str) -> None:
        """Print ``text`` as one line, unwrapped, above any live bar."""


class _LiveBar:
    """A rich bar per piece of work; ``transient``: the bars vanish at the end."""

    def __init__(self, console: Console, unit: str, transient: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[note]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=transient,
        )
        self.unit = self.default_unit = unit
        self.task: Any = None
        self.total: int | None = None
        self.rate = Rate(MIN_SECONDS)
        self.shown = -math.inf

    def __enter__(self) -> _LiveBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, label: str, total: int | None = None, unit: str | None = None) -> None:
        self.unit = unit or self.default_unit
        self.task = self.progress.add_task(escape(label), total=total, note="", rate="", unit=self.unit)
        self.total, self.rate, self.shown = total, Rate(MIN_SECONDS), -math.inf

    def update(self, done: int, total: int | None = None, note: Note | None = None) -> None:
        now = time.perf_counter()
        self.total = total or self.total
        rate = self.rate.report(done, now)
        if now - self.shown < REFRESH and done != self.total:
            return
        self.shown = now
        fields: dict[str, Any] = {"rate": "" if rate is None else f"{rate:,.0f} {self.unit}/s"}
        if note is not None:
            fields["note"] = note()
        self.progress.update(self.task, completed=done, total=self.total, **fields)

    def line(self, text: str) -> None:
        self.progress.console.out(text, highlight=False)


class _PlainLines:
    """Plain lines (the module's): each time the work passes another of its ``parts`` (None: no
    such lines) once a throughput is known, and whenever ``seconds`` pass without a line, from the
    reports or, when none comes, from a background thread (without the note, which only the
    worker may compute: it may read a tensor the worker is writing)."""

    def __init__(self, console: Console, unit: str, parts: int | None, seconds: float) -> None:
        self.console, self.unit, self.parts, self.seconds = console, unit, parts, seconds
        self.default_unit = unit
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.beat = threading.Thread(target=self._beat, name="avi-progress", daemon=True)
        self.label = ""
        self.total: int | None = None
        self.done: int | None = None
        self.steps = 0
        self.rate = Rate(min(MIN_SECONDS, seconds))
        self.began = self.last = time.perf_counter()

    def __enter__(self) -> _PlainLines:
        self.beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.beat.join()

    def start(self, label: str, total: int | None = None, unit: str | None = None) -> None:
        with self.lock:
            self.label, self.total, self.done, self.steps = label, total, None, 0
            self.unit = unit or self.default_unit
            self.rate, self.began = Rate(self.rate.least), time.perf_counter()
            self.last = self.began

    def update(self, done: int, total: int | None = None, note: Note | None = None) -> None:
        now = time.perf_counter()
        with self.lock:
            self.done, self.total = done, total or self.total
            rate = self.rate.report(done, now)
            if rate is None:
                return
            steps = done * self.parts // self.total if self.parts and self.total else 0
            if steps > self.steps or now - self.last >= self.seconds:
                self.steps = steps
                self._emit(describe(self.label, self.unit, done, self.total, rate, note() if note else ""), now)

    def line(self, text: str) -> None:
        with self.lock:
            self._emit(text, time.perf_counter())

    def _emit(self, text: str, now: float) -> None:
        self.console.out(text, highlight=False)
        self.last = now

    def _beat(self) -> None:
        """Every ``seconds`` (at least one) without a line, the work's state as of its last report."""
        while not self.stopped.wait(max(self.last + self.seconds - time.perf_counter(), MIN_SECONDS)):
            with self.lock:
                now = time.perf_counter()
                if self.label and now - self.last >= self.seconds:
                    rate = None if self.done is None else self.rate.at(self.done, now)
                    elapsed = f"{clock(now - self.began)} elapsed" if rate is None else ""
                    self._emit(describe(self.label, self.unit, self.done, self.total, rate, elapsed), now)


class _Silent:
    """No progress: a process other than rank 0 under torchrun."""

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, label: str, total: int | None = None, unit: str | None = None) -> None:
        return None

    def update(self, done: int, total: int | None = None, note: Note | None = None) -> None:
        return None

    def line(self, text: str) -> None:
        return None


def reporter(
    console: Console, unit: str, *, parts: int | None = 10, transient: bool = False, enabled: bool = True
) -> Reporter:
    """Progress in ``unit`` on ``console``: live bars where it is a terminal (``transient``: gone
    at the end), else plain lines each time the work passes another of its ``parts`` and every
    :func:`interval` seconds; nothing when not ``enabled``."""
    if not enabled:
        return _Silent()
    if console.is_terminal:
        return _LiveBar(console, unit, transient)
    return _PlainLines(console, unit, parts, interval())
