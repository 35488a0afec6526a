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
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from avi.errors import RunError
from avi.runs.config import Config, resolve_config

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "SUMMARY",
    "atomic_write_bytes",
    "read_config",
    "read_json",
    "require_run",
    "write_checkpoint",
    "write_json",
    "write_metrics",
]

CONFIG, METRICS, CHECKPOINT, SUMMARY, EVALUATION = (
    "config.json",
    "metrics.csv",
    "checkpoint.pt",
    "summary.json",
    "evaluation.json",
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: readers see the old file or the new one, never a part. Temporary files that an
    earlier, killed write of the same file left behind are removed first."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"cannot read {path}: {err}") from None


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """The whole metrics table, rewritten atomically (it is small), so it always matches the checkpoint."""
    buffer = io.StringIO()
    if rows:
        # every column any row has (rows of a run resumed across versions may differ)
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
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
