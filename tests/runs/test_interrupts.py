"""Ctrl-C: ``avi evaluate`` and ``avi fit`` stop within 2 s with exit code 130 and one line,
nothing written is lost, and an interrupted run resumes, even one stopped before its first
checkpoint, to what an uninterrupted run would have become."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import avi.runs.hooks
from avi.cli import app
from avi.inference.loop import Hook, StepInfo
from avi.inference.state import TrainState
from avi.interrupts import interrupts_held
from avi.runs.config import load_config
from avi.runs.evaluate import run_evaluate
from avi.runs.rundir import read_checkpoint, read_json, read_metrics, write_json
from avi.runs.train import run_fit
from tests.runs.conftest import small_job

#: ``avi evaluate`` as the command line runs it, saying on standard output when the sampling
#: starts and with how many worker threads, so that the interrupt lands in the sampling
ANNOUNCED_EVALUATE = """
import sys
import avi.evaluation.bounds as bounds
from avi.cli import main
parallel = bounds._in_parallel
def announced(estimate, points, workers, stop):
    print(f"sampling with {workers} workers", flush=True)
    return parallel(estimate, points, workers, stop)
bounds._in_parallel = announced
sys.argv = ["avi", "evaluate", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job") / "small.toml"
    path.write_text(small_job(epochs=300))
    return path


@pytest.fixture(scope="module")
def evaluated(job: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of one epoch with an evaluation-k20.json."""
    run = run_fit(load_config(job), tmp_path_factory.mktemp("runs") / "evaluated", epochs=1)
    run_evaluate(run)
    return run


def _interrupt(proc: subprocess.Popen[str]) -> tuple[float, str]:
    """Send SIGINT to ``proc``: the seconds until it exited, and its standard error."""
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return time.monotonic() - sent, stderr


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _same_training(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two checkpoints hold the same weights and the same metrics but for timings."""

    def timeless(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if "second" not in k} for row in rows]

    weights = [(a[part][name], b[part][name]) for part in ("model", "posterior") for name in a[part]]
    return all(torch.equal(x, y) for x, y in weights) and timeless(a["metrics"]) == timeless(b["metrics"])


def test_ctrl_c_stops_evaluate_within_two_seconds_keeping_evaluation_json(evaluated: Path) -> None:
    # 60 points x 10^7 samples on 2 worker threads: minutes of work, stopped within a chunk
    before = (evaluated / "evaluation-k20.json").read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", ANNOUNCED_EVALUATE, str(evaluated), "--k", "10000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "sampling with 2 workers\n"
    time.sleep(0.3)
    seconds, stderr = _interrupt(proc)
    assert proc.returncode == 130, stderr
    assert seconds < 2
    assert _lines(stderr) == ["interrupted; saved evaluations are as they were"]
    assert (evaluated / "evaluation-k20.json").read_bytes() == before
    assert not list(evaluated.glob(".*.tmp")) and not (evaluated / "evaluation-k10000000.json").exists()


def test_ctrl_c_marks_a_fit_interrupted_and_resume_continues_it(job: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "avi", "fit", str(job), "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run / "checkpoint.pt").exists():
        time.sleep(0.02)
    seconds, stderr = _interrupt(proc)
    assert proc.returncode == 130, stderr
    assert seconds < 2
    assert _lines(stderr)[-1] == f"interrupted; {run} keeps its finished epochs: continue with avi fit --resume {run}"
    summary = read_json(run / "summary.json")
    done = read_checkpoint(run / "checkpoint.pt")["epoch"]
    assert summary["status"] == "interrupted" and summary["epochs_done"] == done >= 1
    assert len(read_metrics(run)) == done

    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # the config's 1, as here
    resumed = CliRunner().invoke(app, ["fit", "--resume", str(run), "--epochs", str(done + 1)])
    assert resumed.exit_code == 0, resumed.output
    assert read_json(run / "summary.json")["status"] == "finished"
    uninterrupted = run_fit(load_config(job), tmp_path / "uninterrupted", epochs=done + 1)
    assert _same_training(read_checkpoint(run / "checkpoint.pt"), read_checkpoint(uninterrupted / "checkpoint.pt"))


class _CtrlC(Hook):
    """Ctrl-C at the first step, before any checkpoint."""

    def on_step(self, state: TrainState, info: StepInfo) -> None:
        raise KeyboardInterrupt


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_epoch_zero(
    job: Path, tmp_path: Path, monkeypatch
) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_fit(load_config(job), run, epochs=2, hooks=[_CtrlC()])
    assert read_json(run / "summary.json")["status"] == "interrupted"
    assert read_json(run / "summary.json")["epochs_done"] == 0
    assert (run / "config.json").is_file() and not (run / "checkpoint.pt").exists()
    write_json(run / "summary.json", {"status": "running", "epochs_done": 0, "epochs": 2})  # as a kill leaves it

    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)
    resumed = CliRunner().invoke(app, ["fit", "--resume", str(run), "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert read_json(run / "summary.json")["epochs_done"] == 2
    fresh = run_fit(load_config(job), tmp_path / "fresh", epochs=2)
    assert _same_training(read_checkpoint(run / "checkpoint.pt"), read_checkpoint(fresh / "checkpoint.pt"))


def test_ctrl_c_while_an_epoch_is_saved_lands_after_its_files(job: Path, tmp_path: Path, monkeypatch) -> None:
    """SIGINT just after epoch 1's checkpoint is renamed into place waits until that epoch's
    metrics row and summary are written too: summary.json counts the epoch, with its numbers."""
    write_checkpoint = avi.runs.hooks.write_checkpoint

    def then_ctrl_c(path: Path, state: dict[str, Any]) -> None:
        write_checkpoint(path, state)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(avi.runs.hooks, "write_checkpoint", then_ctrl_c)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_fit(load_config(job), run)
    summary = json.loads((run / "summary.json").read_text())
    [row] = read_metrics(run)
    assert summary["status"] == "interrupted" and summary["epochs_done"] == 1 and summary["epochs"] == 300
    assert summary["train_elbo"] == pytest.approx(row["train_elbo"])
    assert read_checkpoint(run / "checkpoint.pt")["epoch"] == 1


def test_a_held_interrupt_is_raised_as_the_block_ends() -> None:
    handler = signal.getsignal(signal.SIGINT)
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            signal.raise_signal(signal.SIGINT)
            steps.append("the block went on")
    assert steps == ["the block went on"]
    assert signal.getsignal(signal.SIGINT) is handler
    with interrupts_held():
        steps.append("nothing held, nothing raised")
