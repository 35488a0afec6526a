"""Run-directory files: the metrics table written epoch by epoch equals the table written at
once; the checkpoint's metrics rows load back as written."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from avi.runs.rundir import MetricsTable, write_checkpoint


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
        {"epoch": 4, "kl_dim_0": 0.25, "note": "a, quoted \"field\""},
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
    for got, expected in zip(state["metrics"], rows):
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
