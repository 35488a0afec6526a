"""Run directories: atomic writes, so an interrupted run never leaves a half-written file.

Layout of a run directory::

    config.json      the resolved configuration
    metrics.csv      one row per finished epoch
    checkpoint.pt    model, posterior, optimiser and RNG states after the last finished epoch
    best.pt          with train.early_stop: the checkpoint of the best validation epoch
    summary.json     status ("running", "finished" or "diverged") and final numbers
    evaluation.json  written by ``avi evaluate``
    .lock            locked (``flock``) by the ``avi fit`` writing the run, which wrote its pid in

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values only, so a
crafted checkpoint cannot run code.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
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
    "LOCK",
    "METRICS",
    "SUMMARY",
    "MetricsTable",
    "json_text",
    "read_checkpoint",
    "read_config",
    "read_json",
    "read_metrics",
    "require_new_run",
    "require_run",
    "run_lock",
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
#: the checkpoint of the best validation epoch, kept by early stopping
BEST = "best.pt"
LOCK = ".lock"

#: what every checkpoint holds, and of which type (checkpoints may hold more)
CHECKPOINT_SCHEMA: dict[str, tuple[type, str]] = {
    "model": (dict, "a dict"),
    "posterior": (dict, "a dict"),
    "optimizers": (list, "a list"),
    "generator": (torch.Tensor, "a tensor"),
    "epoch": (int, "an integer"),
    "metrics": (list, "a list"),
}


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


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """``metrics.csv`` as one dict per epoch, numbers as floats (ints where whole); [] if absent."""
    try:
        with (run_dir / METRICS).open(newline="") as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RunError(f"cannot read {run_dir / METRICS}: {err}") from None


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``state`` by ``torch.save``, atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state, read on the CPU by torch's weights-only unpickler (tensors and plain
    values; anything else is refused before it is built, so a crafted file runs no code), and
    checked against :data:`CHECKPOINT_SCHEMA`. Every failure is one line."""
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: the error below says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise RunError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # a whole torch.save archive whose pickle names other objects
            raise RunError(
                f"checkpoint {path} holds objects other than tensors and plain values; refusing to load it"
            ) from None
        raise RunError(f"cannot read checkpoint {path}: it is truncated or not a checkpoint") from None
    except Exception:  # truncated archives and foreign files fail in many ways (RuntimeError, EOFError, KeyError)
        raise RunError(f"cannot read checkpoint {path}: it is truncated or not a checkpoint") from None
    _check_schema(path, state)
    return state


def _check_schema(path: Path, state: Any) -> None:
    """A :class:`RunError` naming the first key of :data:`CHECKPOINT_SCHEMA` that ``state``
    lacks or holds with another type."""
    if not isinstance(state, dict):
        raise RunError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of run state")
    for key, (kind, described) in CHECKPOINT_SCHEMA.items():
        if key not in state:
            raise RunError(f"checkpoint {path} lacks {key!r}")
        value = state[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RunError(f"checkpoint {path}: {key!r} is a {type(value).__name__}, not {described}")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``run_dir/.lock`` (with this process's pid written in)
    while the block runs; a run directory another process holds is a :class:`RunError`. The
    kernel releases the lock when the process ends, however it ends; the file stays (removing
    it would let a third process lock a new file while a second waits on the old one)."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDWR | os.O_CREAT)
    except OSError as err:
        raise RunError(f"cannot lock run directory {run_dir}: {err.strerror}") from None
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise RunError(
                f"run directory {run_dir} is in use by another avi process{pid}; "
                "wait for it to finish or use another --out"
            ) from None
        locked = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if locked:  # no stale pid for the next reader
            os.ftruncate(fd, 0)
        os.close(fd)


def require_new_run(run_dir: Path) -> None:
    """A :class:`RunError` where ``run_dir`` already holds a run (a checkpoint)."""
    if (run_dir / CHECKPOINT).exists():
        raise RunError(f"run directory {run_dir} already holds a run; resume it with --resume {run_dir}")


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
