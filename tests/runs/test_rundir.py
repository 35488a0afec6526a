"""Run-directory files: the metrics table written epoch by epoch equals the table written at
once and reads back checked; the checkpoint's metrics rows load back as written; a run's status
is its lock, then its summary; evaluations are kept per k and data, the most careful read first."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avi.errors import RunError
from avi.runs.rundir import (
    TEST_SPLIT,
    MetricsTable,
    best_evaluation,
    evaluation_path,
    read_evaluations,
    read_metrics,
    run_lock,
    run_status,
    write_checkpoint,
    write_json,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _at_once(rows: list[dict]) -> str:
    """The table as csv.DictWriter writes it in one go: every column any row has, in order of appearance."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def test_metrics_written_epoch_by_epoch_equal_the_whole_table(tmp_path: Path) -> None:
    """Rows arrive one at a time; one brings a new column (a resumed run of a newer version),
    one lacks a column, and values include NaN, floats needing quotes-free repr and strings."""
    path = tmp_path / "metrics.csv"
    table = MetricsTable(path)
    rows: list[dict] = []
    table.write(rows)
    assert path.read_text() == ""
    arriving = [
        {"epoch": 1, "train_elbo": -100.25, "val_elbo": math.nan},
        {"epoch": 2, "train_elbo": -99.0 / 7, "val_elbo": -98.5},
        {"epoch": 3, "train_elbo": 1e-300, "val_elbo": -97.0, "kl_dim_0": 0.5},
        {"epoch": 4, "kl_dim_0": 0.25, "note": 'a, quoted "field"'},
        {"epoch": 5, "train_elbo": -96.0, "val_elbo": -95.0, "kl_dim_0": 0.125},
    ]
    for row in arriving:
        rows.append(row)
        table.write(rows)
        with path.open(newline="") as f:
            assert f.read() == _at_once(rows)
    # a fresh table (a resumed run) writes the restored rows the same way
    MetricsTable(path).write(rows)
    with path.open(newline="") as f:
        assert f.read() == _at_once(rows)


def test_checkpoint_metrics_load_back_as_the_rows(tmp_path: Path) -> None:
    """The checkpoint's metrics rows, pickled in one piece, load back as a plain list of the same
    rows (NaN included), beside the tensors."""
    rows = [{"epoch": e, "train_elbo": -100.0 + e, "val_elbo": math.nan, "note": "x"} for e in range(1, 4)]
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, {"metrics": rows, "epoch": 3, "model": {"w": torch.arange(3.0)}})
    state = torch.load(path, weights_only=False)
    assert type(state["metrics"]) is list and state["epoch"] == 3
    assert torch.equal(state["model"]["w"], torch.arange(3.0))
    assert len(state["metrics"]) == 3
    for got, expected in zip(state["metrics"], rows, strict=True):
        assert got.keys() == expected.keys() and math.isnan(got.pop("val_elbo"))
        assert got == {k: v for k, v in expected.items() if k != "val_elbo"}


def test_checkpoint_loads_with_torch_load_defaults(tmp_path: Path) -> None:
    """A checkpoint holds tensors and plain Python values only, so ``torch.load`` with its
    default ``weights_only=True`` reads it (metrics rows included)."""
    rows = [{"epoch": e, "train_elbo": -100.0 + e, "val_elbo": math.nan} for e in range(1, 4)]
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, {"metrics": rows, "epoch": 3, "model": {"w": torch.arange(3.0)}})
    state = torch.load(path)
    assert state["epoch"] == 3 and [row["epoch"] for row in state["metrics"]] == [1, 2, 3]


def test_metrics_read_back_as_written(tmp_path: Path) -> None:
    """Integers, floats, NaN, a hook's text column, and a column the first row lacks (a run
    resumed across versions) pass the checks and read back as written."""
    base = {"train_elbo": -3.5, "train_kl": 0.25, "val_kl": 0.5, "wall_seconds": 1.5}
    rows = [
        {"epoch": 1, **base, "val_elbo": math.nan, "note": 'a, quoted "field"'},
        {"epoch": 2, **base, "val_elbo": -3.0, "note": "", "active_units": 2},
    ]
    MetricsTable(tmp_path / "metrics.csv").write(rows)
    (tmp_path / "checkpoint.pt").write_bytes(b"")  # a run with epochs: its table must be there
    got = read_metrics(tmp_path)
    assert math.isnan(got[0].pop("val_elbo")) and rows[0].pop("val_elbo")
    assert got == [{**rows[0], "active_units": None}, {**rows[1], "note": None}]


def test_a_run_without_epochs_has_no_metrics_until_it_has_a_checkpoint(tmp_path: Path) -> None:
    assert read_metrics(tmp_path) == []
    (tmp_path / "metrics.csv").write_text("")
    assert read_metrics(tmp_path) == []
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(RunError, match="metrics.csv is empty, though the run has a checkpoint"):
        read_metrics(tmp_path)


def test_run_status_is_the_lock_then_the_summary(tmp_path: Path) -> None:
    write_json(tmp_path / "summary.json", {"status": "finished"})
    assert run_status(tmp_path) == "finished"
    write_json(tmp_path / "summary.json", {"status": "running"})
    assert run_status(tmp_path) == "interrupted"  # no process holds the lock: the fit that wrote it died
    with run_lock(tmp_path):
        assert run_status(tmp_path) == "running"
        (tmp_path / "summary.json").unlink()
        assert run_status(tmp_path) == "running"  # a fit that has not written its summary yet
    with pytest.raises(RunError, match="summary.json: No such file or directory"):
        run_status(tmp_path)


def test_a_fit_killed_with_sigkill_leaves_an_interrupted_run(tmp_path: Path) -> None:
    """The kernel drops a dead process's flock: the "running" summary it left reads as interrupted."""
    write_json(tmp_path / "summary.json", {"status": "running"})
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print(flush=True); time.sleep(60)", str(tmp_path / ".lock")],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"\n"  # it holds the lock
        assert run_status(tmp_path) == "running"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert run_status(tmp_path) == "interrupted"


def _evaluation(k: int, data: str = TEST_SPLIT) -> dict:
    """The numbers an ``avi evaluate`` with k samples on ``data`` saves (the larger k, the higher)."""
    return {"n": 30, "data": data, "k": k, "elbo": -9.0, "log_likelihood": -8.0 - 1 / k, "active_units": 1}


def test_a_quick_evaluation_never_replaces_a_careful_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A careful k=5000, then a quick k=10, then a k=100000 one on a data file: three files, and
    the careful one on the run's own test split is the best, whatever came later."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    for k, data in ((5000, None), (10, None), (100_000, "points.npy")):
        write_json(evaluation_path(tmp_path, k, data), _evaluation(k, data or TEST_SPLIT))
    assert len(list(tmp_path.glob("evaluation-*.json"))) == 3
    assert [(e["k"], e["data"]) for e in read_evaluations(tmp_path)] == [
        (5000, TEST_SPLIT), (10, TEST_SPLIT), (100_000, "points.npy")
    ]  # fmt: skip
    best = best_evaluation(tmp_path)
    assert best is not None and best["k"] == 5000 and best["log_likelihood"] == -8.0 - 1 / 5000
    # a data file is named by its absolute path: one file however it is written, two of one stem differ
    assert evaluation_path(tmp_path, 10, "points.npy") == evaluation_path(tmp_path, 10, tmp_path / "points.npy")
    assert evaluation_path(tmp_path, 10, "points.npy") != evaluation_path(tmp_path, 10, "elsewhere/points.npy")
    assert evaluation_path(tmp_path, 10, "points.npy").name.startswith("evaluation-points-")
    assert best_evaluation(tmp_path / "elsewhere") is None


def test_an_old_runs_evaluation_json_reads_at_its_recorded_k(tmp_path: Path) -> None:
    """evaluation.json of a run evaluated before evaluations were kept per k (k = 50) is one of
    the run's evaluations: best beside a quicker one, not beside a more careful one; one written
    without its data is of the test split, the only data its writer saved."""
    old = json.loads((FIXTURES / "old_run_evaluation.json").read_text())
    write_json(tmp_path / "evaluation.json", {key: value for key, value in old.items() if key != "data"})
    write_json(evaluation_path(tmp_path, 20), _evaluation(20))
    assert [e["k"] for e in read_evaluations(tmp_path)] == [50, 20]
    best = best_evaluation(tmp_path)
    assert best is not None and best["data"] == TEST_SPLIT and best["log_likelihood"] == old["log_likelihood"]
    write_json(evaluation_path(tmp_path, 500), _evaluation(500))
    assert [e["k"] for e in read_evaluations(tmp_path)] == [500, 50, 20]


def test_a_damaged_evaluation_is_one_line_naming_its_file(tmp_path: Path) -> None:
    write_json(evaluation_path(tmp_path, 5000), _evaluation(5000))
    write_json(evaluation_path(tmp_path, 10), {**_evaluation(10), "k": 10.5})
    with pytest.raises(RunError, match=r"evaluation-k10\.json: 'k' is a number, not an integer"):
        best_evaluation(tmp_path)
