"""Run-directory files: the metrics table written epoch by epoch equals the table written at once."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from avi.runs.rundir import MetricsTable


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
