"""Logs that read anywhere: ``avi fit`` and ``avi evaluate`` with standard error in a pipe (a
batch job's log), the plain progress lines, the throughput's first refresh, and the threads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from avi import cli_threads
from avi.cli import app
from avi.runs import progress
from avi.runs.progress import Rate, reporter

#: an epoch's line, whole: its number, bounds, seconds, active units and mutual information
EPOCH = re.compile(r"^epoch +(\d+)  train ELBO +\S+  KL +\S+  val ELBO +\S+ +\S+ s  AU \d+  MI \S+$")


def _avi(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``avi ARGS`` in a fresh interpreter, standard error a pipe and nothing forcing a terminal."""
    keep = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    return subprocess.run(
        [sys.executable, "-m", "avi", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**keep, "OMP_NUM_THREADS": "1", **env},
    )


def test_fit_and_evaluate_logs_outside_a_terminal(small_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fitted = _avi("fit", str(small_config(3)), "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    lines = fitted.stderr.splitlines()
    # one whole line per epoch (longer than rich's 80 columns, which wrapped "AU" and "MI" off
    # it), that the bound still improves (it does after 3 epochs), the run directory's, and
    # nothing else: no progress bars dumped at the end
    assert [int(m.group(1)) for m in map(EPOCH.match, lines[:-2]) if m] == [1, 2, 3], fitted.stderr
    assert len(lines) == 5 and lines[-2].startswith("the validation bound was still improving: more epochs")
    assert lines[-1].startswith("run directory: ") and max(map(len, lines)) > 80
    # a line every report (AVI_PROGRESS_SECONDS=0), the sampling in chunks of a few points
    evaluated = _avi("evaluate", str(run), "--k", "1000", "--memory-budget", "2.1", AVI_PROGRESS_SECONDS="0")
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stderr.splitlines()
    assert all(lines), evaluated.stderr  # no blank line
    line = re.compile(r"^importance sampling: (\d+)/60 points \(\d+%\)  [\d.,]+ points/s  ETA \d:\d\d:\d\d$")
    shown = [line.match(s) for s in lines]
    assert all(shown) and len(shown) >= 2, evaluated.stderr
    assert int(shown[-1].group(1)) == 60  # type: ignore[union-attr]


def test_plain_lines_every_tenth_once_a_rate_is_known(monkeypatch) -> None:
    # 100 units, one every 0.1 s on a fake clock: the rate needs a second, so the 10% line comes
    # at 11 units, then one line per 10%; every line has the rate from the first report, 10/s
    clock = SimpleNamespace(perf_counter=lambda: 0.0)
    monkeypatch.setattr(progress, "time", clock)
    monkeypatch.setenv(progress.INTERVAL_VARIABLE, "1000")
    out = StringIO()
    with reporter(Console(file=out), "units") as lines:
        lines.start("work", 100)
        for done in range(1, 101):
            clock.perf_counter = lambda done=done: 0.1 * done
            lines.update(done)
    shown = out.getvalue().splitlines()
    assert [s.split()[1] for s in shown] == ["11/100", *(f"{n}/100" for n in range(20, 101, 10))]
    assert shown[0] == "work: 11/100 units (11%)  10 units/s  ETA 0:00:09" and shown[-1].endswith("ETA 0:00:00")


@pytest.mark.parametrize("terminal", [False, True])
def test_each_piece_of_work_may_count_in_its_own_unit(monkeypatch, terminal: bool) -> None:
    clock = SimpleNamespace(perf_counter=lambda: 0.0)
    monkeypatch.setattr(progress, "time", clock)
    monkeypatch.setenv(progress.INTERVAL_VARIABLE, "1000")
    out = StringIO()
    with reporter(Console(file=out, force_terminal=terminal, width=200), "points") as lines:
        for label, unit in (("refining q*", "steps"), ("log p(x)", None)):
            lines.start(label, 10, unit)
            for done in (1, 10):
                clock.perf_counter = lambda done=done: float(done)
                lines.update(done)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # a terminal's colours and cursor moves
    assert "10/10 steps" in text and "10/10 points" in text and "steps/s" in text and "1 points/s" in text


def test_the_first_refresh_shows_no_throughput() -> None:
    # the old bar divided the first batch by max(now - started, 1e-9): 10^11 examples/s
    rate = Rate(least=1.0)
    assert rate.report(200, now=5.0) is None  # the first report: no interval at all
    assert rate.report(400, now=5.000001) is None  # an interval too short to mean anything
    assert rate.report(2200, now=6.0) == pytest.approx(2000.0)


def test_the_default_threads_leave_busy_cores_alone(monkeypatch) -> None:
    monkeypatch.setattr(cli_threads, "_usable_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert cli_threads.default_threads(2, busy=6.4, cores=2) == 1  # the loaded machine of the note
    assert cli_threads.default_threads(2, busy=0.2, cores=2) == 2  # idle: torch's default
    assert cli_threads.default_threads(8, busy=0.2, cores=64) == 2  # no more than this process may use
    monkeypatch.setattr(cli_threads, "busy_cores", lambda: (6.4, 2))
    assert cli_threads.choose_threads(None, 2) == (1, None)
    assert cli_threads.choose_threads(1, 2) == (1, None)
    threads, warning = cli_threads.choose_threads(2, 2)
    assert threads == 2 and warning is not None and "--threads 1" in warning
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # chosen by the user (or torchrun): kept
    assert cli_threads.choose_threads(None, 2) == (2, None)


def test_oversubscribed_threads_are_one_line(small_config, tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(cli_threads, "busy_cores", lambda: (1.9, 2))
    result = CliRunner().invoke(app, ["fit", str(small_config(1)), "--out", str(tmp_path / "run"), "--threads", "2"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "busy" in line]
    assert calls == [2] and len(warnings) == 1 and warnings[0].startswith("warning: 2 threads on 2 cores, 1.9 ")
