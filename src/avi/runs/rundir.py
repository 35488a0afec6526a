"""Run directories: atomic writes, so an interrupted run never leaves a half-written file.

Layout of a run directory::

    config.json      the resolved configuration
    metrics.csv      one row per finished epoch
    checkpoint.pt    model, posterior, optimiser and RNG states after the last finished epoch
    best.pt          with train.early_stop: the checkpoint of the best validation epoch
    summary.json     status ("running", "finished", "diverged" or "interrupted") and final numbers
    evaluation-*.json  written by ``avi evaluate``, one per k, data and checkpoint (:func:`evaluation_path`);
                     evaluation.json in runs evaluated before evaluations were kept per k
    gaps-*.json      written by ``avi gaps``, one per family and split
    .lock            locked (``flock``) by the ``avi fit`` writing the run, which wrote its pid in

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values only, so a
crafted checkpoint cannot run code. Every reader checks what it reads (JSON files against a
schema, metrics.csv's columns and numbers, checkpoints against :data:`CHECKPOINT_SCHEMA`), so a
damaged file is one :class:`~avi.errors.RunError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from avi.atomic import atomic_write_bytes
from avi.errors import AviError, RunError
from avi.runs.config import Config, resolve_config

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "EVALUATION_SCHEMA",
    "GAPS_SCHEMA",
    "LOCK",
    "METRICS",
    "STATUSES",
    "SUMMARY",
    "SUMMARY_SCHEMA",
    "TEST_SPLIT",
    "Field",
    "MetricsTable",
    "best_evaluation",
    "diagnosed",
    "last_diagnosed",
    "evaluation_path",
    "json_text",
    "read_checkpoint",
    "read_config",
    "read_evaluations",
    "read_gaps",
    "read_json",
    "read_metrics",
    "require_new_run",
    "require_run",
    "run_lock",
    "run_status",
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
#: the data of an evaluation of the run's own test split, as ``avi evaluate`` records it
TEST_SPLIT = "test split"
#: the checkpoint of the best validation epoch, kept by early stopping
BEST = "best.pt"
LOCK = ".lock"


class Field(NamedTuple):
    """A key of a schema: the types its value may have (a bool is never a number), described in
    words, and whether the key must be there."""

    kinds: type | tuple[type, ...]
    described: str
    required: bool = True


#: what every checkpoint holds, and of which type (checkpoints may hold more)
CHECKPOINT_SCHEMA: dict[str, Field] = {
    "model": Field(dict, "a dict"),
    "posterior": Field(dict, "a dict"),
    "optimizers": Field(list, "a list"),
    "generator": Field(torch.Tensor, "a tensor"),
    "epoch": Field(int, "an integer"),
    "metrics": Field(list, "a list"),
    "averaged": Field((dict, type(None)), "a dict of averaged weights", required=False),
}

#: a JSON number, or null where it was not finite (:func:`json_text`)
_NUMBER = Field((int, float, type(None)), "a number")
_TEXT = Field(str, "a string")

#: what each status of summary.json means: "running" while an ``avi fit`` writes the run
STATUSES = ("running", "finished", "diverged", "interrupted")
#: the keys of the files ``avi fit``, ``avi evaluate`` and ``avi gaps`` write that are read back
SUMMARY_SCHEMA: dict[str, Field] = {"status": _TEXT}
EVALUATION_SCHEMA: dict[str, Field] = {
    "elbo": _NUMBER,
    "log_likelihood": _NUMBER,
    "log_likelihood_stderr": _NUMBER._replace(required=False),
    "kl": _NUMBER._replace(required=False),
    "k": Field(int, "an integer", required=False),
    "data": _TEXT._replace(required=False),
    "active_units": Field(int, "an integer", required=False),
    "checkpoint": _TEXT._replace(required=False),
    "checkpoint_epoch": Field(int, "an integer", required=False),
}
GAPS_SCHEMA: dict[str, Field] = {
    "family": _TEXT,
    "split": Field((str, type(None)), "a string or null"),
    "data": _TEXT,
    "n": Field(int, "an integer"),
    **dict.fromkeys(
        ("log_likelihood", "elbo_optimal", "elbo_amortized", "approximation_gap", "amortization_gap"), _NUMBER
    ),
}
#: the columns of metrics.csv that every run has and that ``avi report`` and ``avi compare``
#: read: numbers (NaN where undefined, as the validation ELBO of a run without validation data)
METRICS_REQUIRED = ("epoch", "train_elbo", "train_kl", "val_elbo", "val_kl", "wall_seconds")
#: columns of metrics.csv that hold numbers where a row has them
METRICS_OPTIONAL = ("active_units", "flow_layers_in_use")
#: the columns of metrics.csv that hold integers
METRICS_INTEGER = ("epoch", "active_units", "flow_layers_in_use")


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


def read_json(path: Path, schema: dict[str, Field] | None = None) -> Any:
    """The JSON value in ``path``; with a ``schema``, an object holding each required key of
    the schema, and every key of it that it holds with a value of the key's type. Every failure
    is a one-line :class:`RunError` naming the file."""
    try:
        value = json.loads(path.read_bytes().decode())
    except OSError as err:
        raise RunError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise RunError(f"{path} is not JSON: byte {err.start} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise RunError(f"{path} is not valid JSON: {err.msg} (line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise RunError(f"{path} is not a JSON file avi wrote: it is nested too deeply") from None
    if schema is not None:
        _check_schema(str(path), value, schema, "a JSON object", _json_kind)
    return value


def _json_kind(value: Any) -> str:
    """The JSON type of ``value``, with its article."""
    if isinstance(value, bool):
        return "a boolean"
    kinds = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), f"a {type(value).__name__}")


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
    """``metrics.csv`` as one dict per epoch, numbers as floats (ints where whole), checked: the
    columns of :data:`METRICS_REQUIRED` there, every row whole, and numbers in those columns and
    in :data:`METRICS_OPTIONAL` where a row has them (integers in :data:`METRICS_INTEGER`). A run
    with a checkpoint has finished an epoch, so its table must have a row; [] for a run with
    neither. Every failure is a one-line :class:`RunError` naming the file."""
    path = run_dir / METRICS
    text = _metrics_text(path, has_epochs=(run_dir / CHECKPOINT).is_file())
    if text is None:
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        missing = [column for column in METRICS_REQUIRED if column not in header]
        if missing:
            raise RunError(f"{path} lacks the column {missing[0]!r}: it is not a metrics table avi wrote")
        return [_metrics_row(path, reader.line_num, header, fields) for fields in reader]
    except csv.Error as err:
        raise RunError(f"{path} line {reader.line_num} is not CSV: {err}") from None


def _metrics_text(path: Path, *, has_epochs: bool) -> str | None:
    """The text of a metrics table, or None where there is none and the run ``has_epochs`` not;
    a :class:`RunError` where it is missing, empty, not text, or ends in the middle of a row."""
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        if not has_epochs:
            return None
        raise RunError(f"{path} is missing, though the run has a checkpoint") from None
    except OSError as err:
        raise RunError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise RunError(f"{path} is not a metrics table: byte {err.start} is not UTF-8 text") from None
    if not text:
        if not has_epochs:
            return None
        raise RunError(f"{path} is empty, though the run has a checkpoint")
    if not text.endswith("\n"):  # every row avi writes ends with a newline
        raise RunError(f"{path} is truncated: its last line ends in the middle of a row")
    if text.count("\n") < 2 and has_epochs:
        raise RunError(f"{path} holds no epochs, though the run has a checkpoint")
    return text


def _metrics_row(path: Path, line: int, header: list[str], fields: list[str]) -> dict[str, Any]:
    """Line ``line`` of metrics.csv as a dict, its numbers parsed and checked."""
    if len(fields) != len(header):
        raise RunError(f"{path} line {line} has {len(fields)} fields, its header {len(header)}")
    texts = dict(zip(header, fields, strict=True))
    row = {key: _number(text) for key, text in texts.items()}
    for column in (*METRICS_REQUIRED, *METRICS_OPTIONAL):
        value = row.get(column)
        if value is None and column not in METRICS_REQUIRED:
            continue
        integer = column in METRICS_INTEGER
        if not isinstance(value, int if integer else (int, float)):
            kind = "an integer" if integer else "a number"
            raise RunError(f"{path} line {line}: {column!r} is {texts[column]!r}, not {kind}")
    return row


def diagnosed(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of metrics (a run's records, or metrics.csv's rows, read or as text) that hold the
    collapse diagnostics: every epoch's, or those of every ``train.diagnostics_every``-th, every
    aggressive one and the run's last where training foresaw it (blank cells in the others)."""
    return [row for row in rows if row.get("active_units") not in (None, "")]


def last_diagnosed(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The last of ``rows`` that recorded the collapse diagnostics (an interrupted run's may be
    before its last epoch); {} where none did."""
    found = diagnosed(rows)
    return found[-1] if found else {}


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


def read_gaps(run_dir: Path) -> list[dict[str, Any]]:
    """Every gap decomposition saved in the run directory by ``avi gaps`` (gaps-*.json, in name
    order), each checked against :data:`GAPS_SCHEMA`."""
    return [read_json(path, GAPS_SCHEMA) for path in sorted(run_dir.glob("gaps-*.json"))]


def evaluation_path(run_dir: Path, k: int, data: str | Path | None = None, checkpoint: str = "last") -> Path:
    """Where ``avi evaluate`` keeps its evaluation with ``k`` samples of the run's test split
    (``evaluation-k{k}.json``) or of the file ``data`` (``evaluation-{stem}-{hash}-k{k}.json``,
    the hash the first 8 hex digits of SHA-256 of the file's absolute path, so that two files
    of one name differ), of the last checkpoint; of the best (``checkpoint="best"``, best.pt)
    ``evaluation-best-...``: one file per (k, data, checkpoint), so a quick evaluation never
    replaces a careful one, nor the best checkpoint's the last one's."""
    prefix = "evaluation-" if checkpoint == "last" else f"evaluation-{checkpoint}-"
    if data is None:
        return Path(run_dir) / f"{prefix}k{k}.json"
    absolute = Path(data).resolve()
    digest = hashlib.sha256(str(absolute).encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", absolute.stem)[:40]
    return Path(run_dir) / f"{prefix}{stem}-{digest}-k{k}.json"


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """Every evaluation saved in the run directory, each checked against
    :data:`EVALUATION_SCHEMA`, the most careful first: those of the run's own test split before
    those of other data, then the largest k first (an evaluation without k last), then the last
    checkpoint's before the best's (the run as it ended, as :func:`~avi.runs.load.load_run`
    gives it), then in name order. The evaluation.json of an older run is read as one at its recorded k; it lacks
    ``data`` only where its writer saved test-split evaluations alone, so ``data`` defaults to
    :data:`TEST_SPLIT`."""
    paths = sorted(Path(run_dir).glob("evaluation-*.json"))
    if (Path(run_dir) / EVALUATION).is_file():
        paths.append(Path(run_dir) / EVALUATION)
    evaluations = [{"data": TEST_SPLIT, **read_json(path, EVALUATION_SCHEMA)} for path in paths]
    return sorted(
        evaluations,
        key=lambda e: (e["data"] == TEST_SPLIT, e.get("k", 0), e.get("checkpoint", "last") == "last"),
        reverse=True,
    )


def best_evaluation(run_dir: Path) -> dict[str, Any] | None:
    """The most careful evaluation of the run (:func:`read_evaluations`: the largest k on its
    own test split, else the largest k on any data; the last checkpoint's before the best's at
    equal k), or None where it has none."""
    return next(iter(read_evaluations(run_dir)), None)


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``state`` by ``torch.save``, atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state, read on the CPU by torch's weights-only unpickler (tensors and plain
    values; anything else is refused before it is built, so a crafted file runs no code), and
    checked against :data:`CHECKPOINT_SCHEMA`. Every failure is one line: the file is opened
    here, so that an error of torch's reader (a truncated archive gives ``OSError`` EINVAL)
    says what is wrong with the file, not with the system."""
    try:
        file = path.open("rb")
    except OSError as err:
        raise RunError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    try:
        with file, warnings.catch_warnings():  # a foreign pickle's protocol warning: the error below says it
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # a whole torch.save archive whose pickle names other objects
            raise RunError(
                f"checkpoint {path} holds objects other than tensors and plain values; refusing to load it"
            ) from None
        raise RunError(f"cannot read checkpoint {path}: it is truncated or not a checkpoint") from None
    except Exception:  # truncated archives and foreign files fail in many ways (OSError, RuntimeError, EOFError)
        raise RunError(f"cannot read checkpoint {path}: it is truncated or not a checkpoint") from None
    _check_schema(f"checkpoint {path}", state, CHECKPOINT_SCHEMA, "a dict of run state", _python_kind)
    return state


def _python_kind(value: Any) -> str:
    return f"a {type(value).__name__}"


def _check_schema(name: str, value: Any, schema: dict[str, Field], whole: str, kind_of: Callable[[Any], str]) -> None:
    """A :class:`RunError` unless ``value`` is a dict holding each required key of ``schema``
    and every key of it with a value of the key's type; ``name`` names the file, ``whole`` what
    it should hold, ``kind_of`` a value's type in the message."""
    if not isinstance(value, dict):
        raise RunError(f"{name} holds {kind_of(value)}, not {whole}")
    for key, (kinds, described, required) in schema.items():
        if key not in value:
            if required:
                raise RunError(f"{name} lacks {key!r}")
            continue
        item = value[key]
        if not isinstance(item, kinds) or (isinstance(item, bool) and bool not in _as_tuple(kinds)):
            raise RunError(f"{name}: {key!r} is {kind_of(item)}, not {described}")


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


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
            raise RunError(
                f"run directory {run_dir} is in use by another avi process{_holder(fd)}; "
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


def _holder(fd: int) -> str:
    """`` (pid N)`` naming the process that wrote its pid into the lock file ``fd``, or ''."""
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f" (pid {holder})" if holder.isdigit() else ""


def _fit_holding(run_dir: Path) -> str | None:
    """None where no process holds ``run_dir``'s lock, else `` (pid N)`` or '' naming the one
    that does. Probed with a shared ``flock`` dropped at once, which tells a live fit from a
    killed one (the kernel drops a dead process's lock), whatever summary.json says."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:  # no lock file: no fit ever held it; unreadable: nothing to tell
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def run_status(run_dir: Path) -> str:
    """What state a run is in, the one rule of every command: "running" while an ``avi fit``
    holds its lock; else summary.json's status (one of :data:`STATUSES`), where "running"
    means "interrupted": the fit that wrote it was killed before it could say so."""
    if _fit_holding(run_dir) is not None:
        return "running"
    path = run_dir / SUMMARY
    status = read_json(path, SUMMARY_SCHEMA)["status"]
    if status not in STATUSES:
        raise RunError(f"{path}: unknown status {status!r}; avi writes one of {', '.join(STATUSES)}")
    return "interrupted" if status == "running" else status


def require_new_run(run_dir: Path) -> None:
    """A :class:`RunError` where ``run_dir`` already holds a run (a checkpoint)."""
    if (run_dir / CHECKPOINT).exists():
        raise RunError(f"run directory {run_dir} already holds a run; resume it with --resume {run_dir}")


def require_run(run_dir: str | Path, *, checkpoint: bool = True, stopped: bool = False) -> Path:
    """The run directory, or a :class:`RunError` saying what is missing; with ``stopped``, also
    where an ``avi fit`` is still writing it or its summary.json is damaged (:func:`run_status`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"{run_dir} is not a run directory (no {CONFIG})")
    holder = _fit_holding(run_dir) if stopped else None
    if holder is not None:
        raise RunError(f"run {run_dir} is still being written by avi fit{holder}; wait for it to finish or stop it")
    if checkpoint and not (run_dir / CHECKPOINT).is_file():
        raise RunError(f"run {run_dir} has no checkpoint yet (it has not finished an epoch)")
    if stopped:
        run_status(run_dir)
    return run_dir


def read_config(run_dir: Path) -> Config:
    """The run's config.json, validated as the config it was (an error names the file)."""
    path = run_dir / CONFIG
    values = read_json(path, {})
    try:
        return resolve_config(values)
    except AviError as err:
        raise type(err)(f"{path}: {err}") from None
