"""Run directories: atomic writes, so an interrupted run never leaves a half-written file.

Layout of a run directory::

    config.json      the resolved configuration
    metrics.csv      one row per finished epoch
    checkpoint.pt    model, posterior, optimiser and RNG states after the last finished epoch
    summary.json     status ("running" or "finished") and final numbers
    evaluation.json  written by ``avi evaluate``
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avi.atomic import atomic_write_bytes
from avi.errors import RunError
from avi.runs.config import Config, resolve_config

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "SUMMARY",
    "MetricsTable",
    "json_text",
    "read_config",
    "read_json",
    "require_run",
    "write_checkpoint",
    "write_json",
]

CONFIG, METRICS, CHECKPOINT, SUMMARY, EVALUATION = (
    "config.json",
    "metrics.csv",
    "checkpoint.pt",
    "summary.json",
    "evaluation.json",
)


def _plain(obj: Any) -> Any:
    """``obj`` with numpy and torch scalars (0-d tensors) as Python values, tuples as lists and
    every non-finite float as ``None``, recursively through dicts, lists and tuples."""
    if isinstance(obj, dict):
        return {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(value) for value in obj]
    if isinstance(obj, np.generic) or (isinstance(obj, torch.Tensor) and obj.dim() == 0):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj: Any, indent: int | None = None) -> str:
    """``obj`` as strict JSON text: NaN and infinities (which ``json.dumps`` writes as the
    invalid tokens ``NaN``/``Infinity``) become ``null``; numpy and torch scalars plain numbers."""
    return json.dumps(_plain(obj), indent=indent, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as strict JSON (:func:`json_text`, indented), atomically."""
    atomic_write_bytes(path, (json_text(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"cannot read {path}: {err}") from None


class MetricsTable:
    """A run's ``metrics.csv``: the whole table rewritten atomically after every epoch, so that it
    always matches the checkpoint. ``write`` is given the run's rows so far, a list that only
    grows; each row is formatted once (a write costs the bytes, not formatting every row again)
    unless a row brings a new column, which reformats the table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fields: list[str] = []
        self._lines: list[str] = []

    def write(self, rows: list[dict[str, Any]]) -> None:
        known = set(self._fields)
        added = [k for row in rows[len(self._lines) :] for k in row if k not in known]
        if added or len(rows) < len(self._lines):
            # every column any row has (rows of a run resumed across versions may differ)
            self._fields, self._lines = list(dict.fromkeys(k for row in rows for k in row)), []
        self._lines += [_csv_line([row.get(k, "") for k in self._fields]) for row in rows[len(self._lines) :]]
        header = _csv_line(self._fields) if rows else ""
        atomic_write_bytes(self.path, "".join([header, *self._lines]).encode())


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``state`` by ``torch.save``, atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def require_run(run_dir: str | Path, *, checkpoint: bool = True) -> Path:
    """The run directory, or a :class:`RunError` saying what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"{run_dir} is not a run directory (no {CONFIG})")
    if checkpoint and not (run_dir / CHECKPOINT).is_file():
        raise RunError(f"run {run_dir} has no checkpoint yet (it has not finished an epoch)")
    return run_dir


def read_config(run_dir: Path) -> Config:
    return resolve_config(read_json(run_dir / CONFIG))
