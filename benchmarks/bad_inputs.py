"""Bad inputs, re-measured: the categories of the audit of issue 25, each case run as a user
would run it and judged.

A case is a command line (with the files it needs, made in a directory of its own) and what
should happen: ``refuse`` (exit code 2 and one line on standard error, ``error: ...``, naming the
setting, flag or file where the case says which), ``accept`` (exit code 0, and where the case
checks it, every row of a data file kept), or ``either`` (a valid input that may still be
refused, in one line). Each outcome is one of

- ``clean``: what should happen;
- ``traceback``: an exception escaped (in-process), or a Python traceback on standard error;
- ``silently accepted``: exit code 0 on an input that should have been refused;
- ``other``: anything else: a refusal of several lines or one that names the wrong thing, a
  good input refused, rows dropped, a command still running after its time limit.

Categories: data files, numeric config values, CLI flags, run directories, checkpoints, report
and compare inputs, output paths, fuzzed option combinations. Most cases run in this process
through :func:`avi.cli.main` (the ``avi`` script itself, usage errors included), in a scratch
working directory, with torch on one thread; a FIFO runs in a subprocess, as it could block.
``avi fit`` trains a one-epoch VAE on 60 synthetic points of 12 dimensions; a setting that
makes training last as long as the user asked (a huge ``train.epochs``) is checked without
training (the fit stops where it would build the model). Run as root, a read-only directory is
writable, so the benchmark has no such case.

Usage: ``python benchmarks/bad_inputs.py [--quick] [--out PATH] [--work DIR]``; writes
``benchmarks/results/bad_inputs.json`` (the table and every case that was not clean) and prints
the table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import types
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from unittest import mock

import numpy as np
import torch
from click.testing import CliRunner

from avi.cli import main as avi_main
from avi.cli_options import FIT_FLAGS, Flag
from avi.runs import train
from avi.runs.config import MAX_SEED, MAX_THREADS, Config, load_config, merge_tables
from avi.runs.memory import MODEL_SIZES
from machine import run_facts, write_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness the tests share
from tests.cli_harness import time_limit, toml_value, working_directory  # noqa: E402

if sys.version_info >= (3, 11):
    pass
else:  # Python 3.10: the tomllib parser as its backport, tomli
    pass

DEFAULT_OUT = Path(__file__).parent / "results" / "bad_inputs.json"

REFUSE, ACCEPT, EITHER = "refuse", "accept", "either"
CLEAN, TRACEBACK, SILENT, OTHER = "clean", "traceback", "silently accepted", "other"
VERDICTS = (CLEAN, TRACEBACK, SILENT, OTHER)
#: seconds a command may run before it counts as a hang
TIME_LIMIT = 60

#: the job every ``avi fit`` starts from: one epoch of a 2-latent VAE on 60 points of 12 dimensions
BASE_JOB = {
    "model": {"name": "vae", "latent_dim": 2, "hidden": [16]},
    "data": {"source": "synthetic", "synthetic_dim": 12, "synthetic_points": 60},
    "train": {"epochs": 1, "batch_size": 50, "threads": 1},
    "evaluate": {"k": 20},
}
#: contexts in which settings apply (objective.k needs an objective with k samples ...): each
#: setting is tried in the first where it applies
CONTEXTS: list[dict[str, dict[str, Any]]] = [
    {},
    {"objective": {"name": "iwae"}},
    {"objective": {"name": "renyi"}},
    {"objective": {"name": "cubo"}},
    {"objective": {"name": "elbo", "estimator": "gumbel"}, "model": {"name": "discrete-vae"}},
    {"inference": {"strategy": "semi-amortized"}},
    {"inference": {"strategy": "per-datapoint"}},
    {"inference": {"strategy": "iterative"}},
    {"inference": {"family": "planar"}},
    {"inference": {"family": "sylvester"}},
    {"inference": {"family": "iaf"}},
    {"train": {"lr_schedule": "plateau"}},
    {"remedies": {"kl_warmup": 1, "kl_cycles": 1}},
    {"model": {"likelihood": "gaussian"}, "data": {"standardize": True}},
]
#: settings that make a fit last as long as asked (not sizes that fail to allocate)
DURATIONS = ("train.epochs", "inference.infer_steps", "inference.validation_steps", "inference.refine_steps",
             "inference.iterations")  # fmt: skip
#: settings that size an allocation: a huge one must fail in one line, not train
SIZES = (*MODEL_SIZES, "objective.k", "objective.num_samples", "data.synthetic_points", "data.synthetic_dim")
#: upper bounds a config promises: seeds fit 64 bits, threads a sane number
BOUNDED = {"train.seed": MAX_SEED, "data.seed": MAX_SEED, "train.threads": MAX_THREADS,
           "inference.flow_length": 1000, "inference.householder_reflections": 1000}  # fmt: skip
#: numeric settings that may be negative
SIGNED = ("objective.alpha", "data.mean")


# --- cases and outcomes --------------------------------------------------------------------------


@dataclass
class Case:
    """One bad (or good) input: ``make(where)`` writes its files into the directory ``where``
    and returns the command line; ``mention``: text the one line must hold (any of them);
    ``check(outcome)``: for an accepted input, what is wrong with the result, or None."""

    category: str
    name: str
    make: Callable[[Path], list[str]]
    expect: str = REFUSE
    mention: tuple[str, ...] = ()
    check: Callable[[Outcome], str | None] | None = None
    subprocess: bool = False
    #: stop ``avi fit`` where it would build the model: the input is valid, its cost the user's choice
    validate_only: bool = False
    limit: int = TIME_LIMIT


@dataclass
class Outcome:
    argv: list[str]
    code: int | None
    stdout: str
    stderr: str
    error: str | None = None
    seconds: float = 0.0


class _Validated(Exception):
    """Raised where ``avi fit`` would build the model (:attr:`Case.validate_only`)."""


def _stop_before_build(config: Config) -> Any:
    raise _Validated


def run_in_process(argv: list[str], cwd: Path, *, limit: int = TIME_LIMIT, validate_only: bool = False) -> Outcome:
    """``avi ARGV`` through :func:`avi.cli.main` in this process, in ``cwd``; torch's threads
    stay as they are (``train.threads`` would change them for the process)."""
    code, error = None, None
    started = time.perf_counter()
    patches = [mock.patch.object(train, "build_run", _stop_before_build)] if validate_only else []
    with (
        CliRunner().isolation() as (stdout, stderr, _),
        mock.patch.object(sys, "argv", ["avi", *argv]),
        mock.patch.object(torch, "set_num_threads", lambda threads: None),
        working_directory(cwd),
        contextlib.ExitStack() as stack,
    ):
        for patch in patches:
            stack.enter_context(patch)
        try:
            with time_limit(limit):
                avi_main()
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except _Validated:
            code = 0
        except BaseException as err:  # noqa: B036 -- every other escape is the measured failure
            error = _describe(err)
        sys.stdout.flush()
        sys.stderr.flush()
        out, err_text = stdout.getvalue().decode(errors="replace"), stderr.getvalue().decode(errors="replace")
    return Outcome(argv, code, out, err_text, error, time.perf_counter() - started)


def _describe(err: BaseException) -> str:
    """The exception and where it was raised: its type, first line and innermost avi frame."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/avi/" in f.filename]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}{where}: {text[0] if text else ''}"[:300]


def run_subprocess(argv: list[str], cwd: Path, *, limit: int = TIME_LIMIT) -> Outcome:
    """``python -m avi ARGV`` in a fresh interpreter, in ``cwd``, killed after ``limit`` s."""
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        done = subprocess.run([sys.executable, "-m", "avi", *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=limit)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Outcome(argv, None, "", "", f"TooSlow: still running after {limit} s", time.perf_counter() - started)
    error = None
    if "Traceback (most recent call last)" in done.stderr:
        error = done.stderr.strip().splitlines()[-1][:300]
    return Outcome(argv, done.returncode, done.stdout, done.stderr, error, time.perf_counter() - started)


def judge(case: Case, outcome: Outcome) -> tuple[str, str]:
    """The verdict on ``outcome`` (:data:`VERDICTS`) and what it rests on."""
    if outcome.error is not None:
        return (OTHER, "hang: " + outcome.error) if outcome.error.startswith("TooSlow") else (TRACEBACK, outcome.error)
    if outcome.code == 0:
        if case.expect == REFUSE:
            return SILENT, "exit 0"
        problem = case.check(outcome) if case.check is not None else None
        return (OTHER, problem) if problem else (CLEAN, "exit 0")
    if outcome.code != 2:
        return OTHER, f"exit code {outcome.code}: {outcome.stderr.strip()[-200:]}"
    lines = outcome.stderr.splitlines()
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return OTHER, f"exit 2 with {len(lines)} lines on stderr: {outcome.stderr[:300]!r}"
    if case.expect == ACCEPT:
        return OTHER, f"a good input refused: {lines[0]}"
    if case.expect == REFUSE and case.mention and not any(t.lower() in lines[0].lower() for t in case.mention):
        return OTHER, f"the message names none of {list(case.mention)}: {lines[0]}"
    return CLEAN, lines[0]


# --- the workspace: configs and trained runs -----------------------------------------------------


def toml_text(tables: dict[str, dict[str, Any]]) -> str:
    return "".join(f"[{section}]\n" + "".join(f"{key} = {toml_value(v)}\n" for key, v in table.items())
                   for section, table in tables.items())  # fmt: skip


@dataclass
class Workspace:
    """The scratch directory: the base configs (Bernoulli and Gaussian VAE), a trained run of
    each (the Bernoulli one evaluated and decomposed, so that its files can be damaged), and a
    fresh directory per case."""

    root: Path
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def config(self) -> Path:
        return self.root / "base.toml"

    @property
    def gaussian_config(self) -> Path:
        return self.root / "gaussian.toml"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def gaussian_run(self) -> Path:
        return self.root / "gaussian-run"

    def fresh(self) -> Path:
        where = self.root / "cases" / f"{next(self.counter):04d}"
        where.mkdir(parents=True)
        return where

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(toml_text(BASE_JOB))
        gaussian = merge_tables(BASE_JOB, {"model": {"likelihood": "gaussian"}})
        self.gaussian_config.write_text(toml_text(gaussian))
        for argv in (
            ["fit", str(self.config), "--out", str(self.run)],
            ["fit", str(self.gaussian_config), "--out", str(self.gaussian_run)],
            ["evaluate", str(self.run), "--k", "5"],
            ["gaps", str(self.run), "--points", "5", "--steps", "5"],
        ):
            outcome = run_in_process(argv, self.root)
            if outcome.code != 0:
                raise SystemExit(f"preparing the workspace: avi {argv} failed: {outcome.error or outcome.stderr}")


# --- data files ----------------------------------------------------------------------------------

ROWS = 20
_X = np.random.default_rng(0).standard_normal((ROWS, 12)).astype(np.float32)
Writer = Callable[[Path], Path]


def _npy(array: np.ndarray, name: str = "x.npy") -> Writer:
    def write(where: Path) -> Path:
        path = where / name
        with path.open("wb") as f:
            np.save(f, array, allow_pickle=array.dtype.hasobject)
        return path

    return write


def _npz(name: str = "x.npz", compressed: bool = False, **arrays: np.ndarray) -> Writer:
    def write(where: Path) -> Path:
        path = where / name
        with path.open("wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
        return path

    return write


def _bytes(content: bytes, name: str) -> Writer:
    def write(where: Path) -> Path:
        (where / name).write_bytes(content)
        return where / name

    return write


def _csv(text: str, name: str = "x.csv", encoding: str = "utf-8") -> Writer:
    return _bytes(text.encode(encoding), name)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _lying_header(shape: tuple[int, ...]) -> bytes:
    """A .npy file whose header claims ``shape`` of float64, followed by 16 bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(16)


def _rows(x: np.ndarray = _X, sep: str = ",", end: str = "\n") -> str:
    return "".join(sep.join(f"{v:.6g}" for v in row) + end for row in x)


def _with(x: np.ndarray, row: int, column: int, value: float) -> np.ndarray:
    x = x.copy().astype(np.float64)
    x[row, column] = value
    return x


def _special(where: Path, kind: str) -> Path:
    """A FIFO, a directory, a link to a device or nowhere, named as a data file."""
    path = where / ("x.csv" if kind == "fifo csv" else "x.npy")
    if kind.startswith("fifo"):
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "dangling link":
        path.symlink_to(where / "nowhere.npy")
    elif kind == "link to a good file":
        _npy(_X, "good.npy")(where)
        path.symlink_to(where / "good.npy")
    return path


def data_files() -> dict[str, tuple[Writer, str]]:
    """Data files by name: how to write one, and whether all its :data:`ROWS` rows should be used."""
    files = {**_npy_files(), **_npz_files(), **_csv_files()}
    for kind, expect in [("directory", REFUSE), ("link to /dev/zero", REFUSE), ("dangling link", REFUSE),
                         ("link to a good file", ACCEPT)]:  # fmt: skip
        files[kind] = (lambda where, kind=kind: _special(where, kind), expect)
    files["missing file"] = (lambda where: where / "missing.npy", REFUSE)
    return files


def _npy_files() -> dict[str, tuple[Writer, str]]:
    text = _rows()
    return {
        "npy float32": (_npy(_X), ACCEPT), "npy float64": (_npy(_X.astype(np.float64)), ACCEPT),
        "npy int": (_npy((_X * 10).astype(np.int64)), ACCEPT), "npy bool": (_npy(_X > 0), ACCEPT),
        "npy float16": (_npy(_X.astype(np.float16)), ACCEPT), "npy big-endian": (_npy(_X.astype(">f8")), ACCEPT),
        "npy Fortran order": (_npy(np.asfortranarray(_X)), ACCEPT), "npy suffix .NPY": (_npy(_X, "x.NPY"), ACCEPT),
        "npy 1-D": (_npy(_X[0]), REFUSE), "npy 3-D": (_npy(_X.reshape(ROWS, 3, 4)), REFUSE),
        "npy 0 rows": (_npy(_X[:0]), REFUSE), "npy 0 columns": (_npy(_X[:, :0]), REFUSE),
        "npy 5 columns": (_npy(_X[:, :5]), REFUSE), "npy NaN": (_npy(_with(_X, 3, 2, math.nan)), REFUSE),
        "npy inf": (_npy(_with(_X, 0, 0, math.inf)), REFUSE), "npy -inf": (_npy(_with(_X, 19, 11, -math.inf)), REFUSE),
        "npy complex": (_npy(_X.astype(np.complex64)), REFUSE),
        "npy strings": (_npy(np.full((ROWS, 12), "a")), REFUSE),
        "npy Python objects": (_npy(np.array([[1.0] * 12] * ROWS, dtype=object)), REFUSE),
        "npy structured": (_npy(np.zeros((ROWS, 12), dtype=[("a", "<f4")])), REFUSE),
        "npy datetimes": (_npy(np.zeros((ROWS, 12), dtype="datetime64[s]")), REFUSE),
        "npy header claims (2, 10^12)": (_bytes(_lying_header((2, 10**12)), "x.npy"), REFUSE),
        "npy header claims (-1, 12)": (_bytes(_lying_header((-1, 12)), "x.npy"), REFUSE),
        "npy header claims (2^62, 2^62)": (_bytes(_lying_header((2**62, 2**62)), "x.npy"), REFUSE),
        "npy truncated": (_bytes(_npy_bytes(_X)[:500], "x.npy"), REFUSE),
        "npy header only": (_bytes(_npy_bytes(_X)[:128], "x.npy"), REFUSE),
        "npy random bytes": (_bytes(bytes(range(256)) * 8, "x.npy"), REFUSE),
        "npy empty file": (_bytes(b"", "x.npy"), REFUSE), "npy a CSV inside": (_bytes(text.encode(), "x.npy"), REFUSE),
    }  # fmt: skip


def _npz_files() -> dict[str, tuple[Writer, str]]:
    labels = np.arange(ROWS) % 3
    return {
        "npz x": (_npz(x=_X), ACCEPT), "npz x and labels y": (_npz(x=_X, y=labels), ACCEPT),
        "npz compressed": (_npz(compressed=True, x=_X, y=labels), ACCEPT), "npz one array": (_npz(data=_X), ACCEPT),
        "npz float labels": (_npz(x=_X, y=labels.astype(np.float64)), ACCEPT),
        "npz two arrays, no x": (_npz(a=_X, b=_X), REFUSE), "npz no arrays": (_npz(), REFUSE),
        "npz string labels": (_npz(x=_X, y=np.array([f"c{i}" for i in labels])), REFUSE),
        "npz fractional labels": (_npz(x=_X, y=labels + 0.5), REFUSE),
        "npz negative labels": (_npz(x=_X, y=labels - 1), REFUSE),
        "npz NaN labels": (_npz(x=_X, y=np.full(ROWS, math.nan)), REFUSE),
        "npz labels of another length": (_npz(x=_X, y=labels[:5]), REFUSE),
        "npz 2-D labels": (_npz(x=_X, y=labels.reshape(ROWS, 1)), REFUSE),
        "npz object x": (_npz(x=np.array([[1.0] * 12] * ROWS, dtype=object)), REFUSE),
        "npz 1-D x": (_npz(x=_X[0]), REFUSE), "npz NaN in x": (_npz(x=_with(_X, 1, 1, math.nan)), REFUSE),
        "npz random bytes": (_bytes(bytes(range(256)) * 8, "x.npz"), REFUSE),
        "npz truncated": (lambda where: _truncated_npz(where), REFUSE),
        "npz member with a lying header": (lambda where: _lying_npz(where), REFUSE),
        "npz an .npy inside": (_bytes(_npy_bytes(_X), "x.npz"), REFUSE),
    }  # fmt: skip


def _csv_files() -> dict[str, tuple[Writer, str]]:
    text = _rows()
    return {
        "csv plain": (_csv(text), ACCEPT), "csv header": (_csv("a,b,c,d,e,f,g,h,i,j,k,l\n" + text), ACCEPT),
        "csv byte-order mark": (_csv("\ufeff" + text), ACCEPT),
        "csv byte-order mark and header": (_csv("\ufeffa,b,c,d,e,f,g,h,i,j,k,l\n" + text), ACCEPT),
        "csv CRLF": (_csv(_rows(end="\r\n")), ACCEPT), "csv comments": (_csv("# made by hand\n" + text), ACCEPT),
        "csv trailing blank lines": (_csv(text + "\n\n"), ACCEPT),
        "csv spaces around fields": (_csv(_rows(sep=" , ")), ACCEPT),
        "csv one empty field in the first row": (_csv("," + text[text.index(",") + 1 :]), REFUSE),
        "csv one empty field later": (_csv(text + "," * 11 + "\n"), REFUSE),
        "csv trailing comma": (_csv(_rows(end=",\n")), REFUSE),
        "csv ragged rows": (_csv(text + "1,2,3\n"), REFUSE),
        "csv text in a row": (_csv(text + "a," * 11 + "a\n"), REFUSE),
        "csv nan": (_csv(_rows(_with(_X, 4, 4, math.nan))), REFUSE),
        "csv inf": (_csv(_rows(_with(_X, 4, 4, math.inf))), REFUSE), "csv empty": (_csv(""), REFUSE),
        "csv header only": (_csv("a,b,c\n"), REFUSE), "csv blank lines only": (_csv("\n\n\n"), REFUSE),
        "csv semicolons": (_csv(_rows(sep=";")), REFUSE), "csv tabs": (_csv(_rows(sep="\t")), REFUSE),
        "csv quoted numbers": (_csv(_rows(sep='","')), REFUSE),
        "csv Latin-1 header": (_csv("température" + ",x" * 11 + "\n" + text, encoding="latin-1"), REFUSE),
        "csv UTF-16": (_csv(text, encoding="utf-16"), REFUSE), "csv one column": (_csv(_rows(_X[:, :1])), REFUSE),
        "csv binary": (_bytes(bytes(range(256)) * 8, "x.csv"), REFUSE),
        "suffix .txt": (_csv(text, "x.txt"), REFUSE), "no suffix": (_csv(text, "x"), REFUSE),
    }  # fmt: skip


def _truncated_npz(where: Path) -> Path:
    path = _npz(x=_X)(where)
    path.write_bytes(path.read_bytes()[:700])
    return path


def _lying_npz(where: Path) -> Path:
    path = where / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", _lying_header((ROWS, 10**9)))
    return path


#: files of another width than the trained runs' 12: refused by a run, a new fit's data for ``avi fit``
OTHER_WIDTHS = ("npy 5 columns", "csv one column")


def _rows_kept(outcome: Outcome) -> str | None:
    """Whether ``avi evaluate --json`` evaluated every row of the file."""
    n = json.loads(outcome.stdout.strip().splitlines()[-1])["n"]
    return None if n == ROWS else f"{ROWS - n} of {ROWS} rows dropped"


def data_file_cases(ws: Workspace) -> list[Case]:
    """Each file given to ``avi evaluate --data`` (every row must count) and ``avi fit --data``;
    a FIFO in a subprocess; values outside [0, 1] for a Bernoulli model."""
    cases = []
    for name, (write, expect) in data_files().items():

        def evaluate(where: Path, write: Writer = write) -> list[str]:
            return ["evaluate", str(ws.gaussian_run), "--data", str(write(where)), "--k", "2", "--json"]

        def fit(where: Path, write: Writer = write) -> list[str]:
            return ["fit", str(ws.gaussian_config), "--data", str(write(where)), "--out", str(where / "out")]

        cases.append(Case("data files", f"evaluate: {name}", evaluate, expect, check=_rows_kept))
        cases.append(Case("data files", f"fit: {name}", fit, ACCEPT if name in OTHER_WIDTHS else expect))
    for kind in ("fifo npy", "fifo csv"):
        cases.append(Case("data files", f"fit: a FIFO ({kind})", lambda where, kind=kind: [
            "fit", str(ws.gaussian_config), "--data", str(_special(where, kind)), "--out", str(where / "out")],
            subprocess=True))  # fmt: skip
    for name, x, expect in [("values in [0, 1]", np.abs(_X) / 4, ACCEPT), ("negative values", _X, REFUSE),
                            ("values of 2", _X * 0 + 2, REFUSE)]:  # fmt: skip
        cases.append(Case("data files", f"evaluate Bernoulli: {name}", lambda where, x=x: [
            "evaluate", str(ws.run), "--data", str(_npy(x)(where)), "--k", "2", "--json"], expect,
            check=_rows_kept))  # fmt: skip
    return cases


# --- config values -------------------------------------------------------------------------------


def _fields() -> Iterator[tuple[str, str, Any]]:
    """Every (section, key, field info) of the config, from the model itself."""
    for section, info in Config.model_fields.items():
        for key, field_info in info.annotation.model_fields.items():  # type: ignore[union-attr]
            yield section, key, field_info


def _admits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` is of the annotation's type, strictly (a bool is no number, a float no int)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _admits(args[0], value)
    if origin in (Union, types.UnionType):
        return any(_admits(arg, value) for arg in args)
    if origin is Literal:
        return value in args and all(type(value) is type(choice) for choice in args)
    if origin is list:
        return type(value) is list and all(_admits(args[0], item) for item in value)
    if annotation is float:
        return type(value) in (int, float)
    return type(value) is annotation


def _kind(annotation: Any) -> str:
    """``list`` (of numbers), ``bool``, ``int``, ``float``, ``text`` or ``other``, for a field."""
    for kind, value in (("list", [1]), ("bool", True), ("int", 1), ("float", 1.5)):
        if _admits(annotation, value):
            return "float" if kind == "int" and _admits(annotation, 1.5) else kind
    literal_text = any(isinstance(choice, str) for arg in (annotation, *get_args(annotation))
                       if get_origin(arg) is Literal for choice in get_args(arg))  # fmt: skip
    return "text" if _admits(annotation, "x") or literal_text else "other"


def _sample(section: str, key: str, kind: str, default: Any) -> Any:
    """A valid value of the setting other than its default (a setting at its default may pass
    where it does not apply), to find a context in which it applies."""
    lists = {"data.mean": [0.5] * 12, "data.sd": [2.0] * 12}
    if kind == "list":
        return lists.get(f"{section}.{key}", [8])
    if kind == "int":
        return 2 if default is None else default + 1
    if kind == "float":
        return 0.5 if not default else 1.5 * default
    return default


#: where a setting is read that no config check ties to another (so that it is read, not ignored)
READ_IN = {"inference.flow_transforms": {"inference": {"family": "iaf"}},
           "inference.flow_hidden": {"inference": {"family": "iaf"}},
           "objective.cubo_order": {"objective": {"name": "cubo"}},
           "objective.temperature": CONTEXTS[4], "objective.straight_through": CONTEXTS[4],
           "remedies.kl_warmup_start": {"remedies": {"kl_warmup": 3}}}  # fmt: skip


def _context(section: str, key: str, value: Any) -> dict[str, Any] | None:
    """The base job in the first of :data:`CONTEXTS` where ``section.key = value`` is accepted."""
    preferred = READ_IN.get(f"{section}.{key}")
    for context in [preferred] if preferred else CONTEXTS:
        tables = merge_tables(merge_tables(BASE_JOB, context), {section: {key: value}})
        with contextlib.suppress(Exception):
            load_config(None, tables)
            return tables
    return None


def _context_label(tables: dict[str, Any], section: str, key: str) -> str:
    """`` (with inference.strategy = 'per-datapoint')``: the context's settings beside the base job's."""
    differs = [f"{s}.{k} = {v!r}" for s, table in tables.items() for k, v in table.items()
               if (s, k) != (section, key) and BASE_JOB.get(s, {}).get(k) != v]  # fmt: skip
    return f" (with {', '.join(differs)})" if differs else ""


def _numeric_expectation(setting: str, kind: str, label: str) -> tuple[str, bool]:
    """What a numeric value of ``setting`` should meet (by its :data:`NUMERIC_VALUES` label), and
    whether the fit stops before training (a duration the user chose)."""
    if label in ("true", "inf", "nan", '"1"'):
        return REFUSE, False
    if label == "-1":
        return (EITHER if setting in SIGNED else REFUSE), False
    if label == "0.5":
        return (REFUSE if kind == "int" else EITHER), False
    huge = {"2^40": 2**40, "2^64": 2**64}[label]
    if setting in DURATIONS:
        return EITHER, True
    refused = setting in SIZES or huge > BOUNDED.get(setting, huge)
    return (REFUSE if refused else EITHER), False


NUMERIC_VALUES: dict[str, Any] = {
    "true": True, "inf": math.inf, "nan": math.nan, "-1": -1, "0.5": 0.5, "2^40": 2**40, "2^64": 2**64, '"1"': "1",
}  # fmt: skip
#: numbers and text given to bool and text settings: a number is not a bool, nor text
OTHER_VALUES: dict[str, dict[str, Any]] = {"bool": {"1": 1, '"true"': "true"}, "text": {"1": 1}}


def _fit_with(ws: Workspace, tables: dict[str, Any]) -> Callable[[Path], list[str]]:
    def make(where: Path) -> list[str]:
        (where / "job.toml").write_text(toml_text(tables))
        return ["fit", str(where / "job.toml"), "--out", str(where / "out")]

    return make


def config_value_cases(ws: Workspace) -> list[Case]:
    """Every numeric setting of the config with each of :data:`NUMERIC_VALUES` (list settings with
    the value as their one element), and every bool and text setting with :data:`OTHER_VALUES`,
    in a TOML file given to ``avi fit``, in a context where the setting applies."""
    cases = []
    for section, key, info in _fields():
        kind, setting = _kind(info.annotation), f"{section}.{key}"
        base = _context(section, key, _sample(section, key, kind, info.default))
        if base is None or kind == "other":
            continue
        numeric = kind in ("int", "float", "list")
        element = "int" if kind == "int" or (kind == "list" and not _admits(info.annotation, [1.5])) else "float"
        for label, value in (NUMERIC_VALUES if numeric else OTHER_VALUES[kind]).items():
            if kind == "list" and label != '"1"':  # the value as the list's elements
                value = [value] * (12 if section == "data" else 1)
            expect, validate_only = _numeric_expectation(setting, element, label) if numeric else (REFUSE, False)
            tables = merge_tables(base, {section: {key: value}})
            mention = (setting, key) if len(key) > 4 else (setting,)  # "unknown preset 1" names it
            cases.append(Case("numeric config values", f"{setting} = {label}{_context_label(base, section, key)}",
                              _fit_with(ws, tables), expect, mention, validate_only=validate_only))  # fmt: skip
    return cases


# --- command-line flags --------------------------------------------------------------------------

#: bad values of a flag by its type, each refused unless :func:`_flag_expectation` says otherwise
BAD_FLAG_VALUES: dict[type, list[str]] = {
    int: ["abc", "1.5", "", "inf", "-1", "0x10", "9" * 25],
    float: ["abc", "", "inf", "-inf", "nan", "1e400", "0x1p3"],
    str: ["", "nonsense", "é😀"],
    list: ["a,b", "1,,2", "-1", "0", "1.5", "9" * 25],
}


def _flag_expectation(flag: Flag, value: str) -> tuple[str, bool]:
    """What ``flag VALUE`` should meet, and whether the fit stops before training: a number
    past 64 bits is refused where it sizes an allocation or passes a bound, a duration's is
    the user's choice, and any other count's may be accepted."""
    if value != "9" * 25 or flag.type is list:
        return REFUSE, False
    if flag.key in DURATIONS:
        return EITHER, True
    return (REFUSE if flag.key in SIZES or flag.key in BOUNDED else EITHER), False


def _argv(*args: str | Callable[[Path], str]) -> Callable[[Path], list[str]]:
    """A command line whose callable parts are made in the case's directory."""
    return lambda where: [arg(where) if callable(arg) else arg for arg in args]


def fit_flag_cases(ws: Workspace) -> list[Case]:
    """Each flag of ``avi fit`` with the bad values of its type (a switch with a value, or with
    ``--no-`` where it has none)."""
    cases = []
    out = lambda where: str(where / "out")  # noqa: E731
    for flag in FIT_FLAGS:
        if flag.type is bool:
            for args in ([flag.option, "yes"], [] if flag.negatable else [f"--no-{flag.option[2:]}"]):
                if args:
                    cases.append(Case("CLI flags", f"fit {' '.join(args)}", _argv("fit", str(ws.config), *args)))
            continue
        for value in BAD_FLAG_VALUES[flag.type]:
            expect, validate_only = _flag_expectation(flag, value)
            cases.append(Case("CLI flags", f"fit {flag.option} {value!r}", _argv(
                "fit", str(ws.config), flag.option, value, "--out", out), expect, (flag.option, flag.key, repr(value),
                *([value] if value else [])),
                validate_only=validate_only))  # fmt: skip
    return cases


#: a command line's name, its parts, what it should meet and what its refusal should name
CommandLine = tuple[str, list[Any], str, tuple[str, ...]]


def command_flag_cases(ws: Workspace) -> list[Case]:
    """Bad values of the options of evaluate, gaps, compare and report, and bad command lines."""
    table = [*_evaluate_gaps_lines(str(ws.run)), *_other_lines(str(ws.run), str(ws.config))]
    return [Case("CLI flags", name, _argv(*argv), expect, mention, limit=20) for name, argv, expect, mention in table]


def _evaluate_gaps_lines(run: str) -> list[CommandLine]:
    big, bigger = str(2**63), str(2**64)
    return [
        *((f"evaluate --k {v}", ["evaluate", run, "--k", v], REFUSE, ("--k", "k")) for v in
          ["abc", "0", "-1", "1.5", "", big, bigger]),
        *((f"evaluate --memory-budget {v}", ["evaluate", run, "--memory-budget", v], REFUSE, ("memory budget",
          "--memory-budget")) for v in ["inf", "-inf", "nan", "0", "-1", "1e308", "1e-300", "abc", ""]),
        *((f"evaluate --device {v}", ["evaluate", run, "--device", v], REFUSE, ("device",)) for v in
          ["meta", "mps", "xpu", "cuda", "cuda:0", "cuda:x", "", "CPU", "cuda:-1"]),
        *((f"evaluate --precision {v}", ["evaluate", run, "--precision", v], REFUSE, ("precision",)) for v in
          ["fp16", "", "bf32"]),
        *((f"gaps --points {v}", ["gaps", run, "--points", v, "--steps", "2"], REFUSE, ("points", "--points"))
          for v in ["0", "-1", "abc"]),
        ("gaps --points 2^64", ["gaps", run, "--points", bigger, "--steps", "2"], EITHER, ()),
        *((f"gaps --{o} {v}", ["gaps", run, f"--{o}", v, "--points", "3", "--steps", "2"] if o != "steps" else
           ["gaps", run, "--steps", v, "--points", "3"], REFUSE, (o.replace("-", " "), f"--{o}", o.split("-")[0]))
          for o in ("steps", "ais-steps", "k") for v in ["-1", "abc", big, bigger]),
        *((f"gaps --split {v}", ["gaps", run, "--split", v], REFUSE, ("split",)) for v in ["val", ""]),
        *((f"gaps --family {v}", ["gaps", run, "--family", v, "--points", "3", "--steps", "2"], REFUSE, ())
          for v in ["xx", "categorical", ""]),
    ]  # fmt: skip


def _other_lines(run: str, config: str) -> list[CommandLine]:
    out = lambda where: str(where / "out")  # noqa: E731
    return [
        *((f"compare --model {v}", ["compare", "--model", v, "--out", out], REFUSE, ()) for v in ["xx", ""]),
        *((f"compare --methods {v}", ["compare", "--model", "normal-normal", "--methods", v, "--out", out], REFUSE,
           ("method",)) for v in ["xx", ",", "exact,xx", "nuts;mh"]),
        ("compare RUN --model", ["compare", run, "--model", "normal-normal", "--out", out], REFUSE, ()),
        ("compare RUN --quick", ["compare", run, "--quick", "--out", out], REFUSE, ()),
        ("fit --lr (no value)", ["fit", config, "--lr"], REFUSE, ("--lr",)),
        ("fit --out (no value)", ["fit", config, "--out"], REFUSE, ("--out",)),
        ("fit --no-such-flag", ["fit", config, "--no-such-flag"], REFUSE, ("--no-such-flag",)),
        ("fit --latent-dims 3 (a typo)", ["fit", config, "--latent-dims", "3"], REFUSE, ("--latent-dims",)),
        ("fit --lr=abc", ["fit", config, "--lr=abc"], REFUSE, ("--lr",)),
        ("fit --lr 0.1 --lr 0.01", ["fit", config, "--lr", "0.1", "--lr", "0.01", "--out", out], EITHER, ()),
        *((f"fit --lr {v}", ["fit", config, "--lr", v, "--out", out], EITHER, ()) for v in ["1e30", "1e300"]),
        ("fit two configs", ["fit", config, config, "--out", out], REFUSE, ()),
        *((f"fit --set {v}", ["fit", config, "--set", v, "--out", out], REFUSE, ()) for v in
          ["x", "a=1", "model.=1", ".=", "model.latent_dim", "model.latent_dim=", "model.latent_dim==3",
           "model.latent_dim=[", "a.b.c.d=1", "model=1", "model.args.x=1", "model.latent_dim.x=1"]),
        *((f"fit --resume RUN {' '.join(f)}", ["fit", "--resume", run, *f], REFUSE, ()) for f in
          [["--latent-dim", "3"], ["--epochs", "0"], ["--threads", "0"], ["--set", "train.lr=1"], [config]]),
        ("fit --resume MISSING", ["fit", "--resume", out], REFUSE, ()),
        ("evaluate (no run)", ["evaluate"], REFUSE, ()), ("evaluate RUN RUN", ["evaluate", run, run], REFUSE, ()),
        ("report (no run)", ["report"], REFUSE, ()), ("report RUN RUN", ["report", run, run], REFUSE, ()),
        ("avi nope", ["nope"], REFUSE, ()), ("avi fit --help", ["fit", "--help"], ACCEPT, ()),
    ]  # fmt: skip


# --- run directories and checkpoints -------------------------------------------------------------

COMMANDS = ("evaluate", "gaps", "report", "compare", "resume")
#: the files each command reads
READS = {
    "evaluate": {"config.json", "checkpoint.pt", "summary.json"},
    "gaps": {"config.json", "checkpoint.pt", "summary.json", "other gaps"},
    "report": {"config.json", "checkpoint.pt", "summary.json", "metrics.csv", "evaluation", "gaps", "other gaps"},
    "compare": {"config.json", "summary.json", "metrics.csv", "evaluation", "gaps"},  # gaps of the run's family
    "resume": {"config.json", "checkpoint.pt"},  # summary.json and metrics.csv (from the checkpoint) it writes anew
}
#: the files of the run by their READS name: "gaps" is the decomposition ``avi gaps`` replaces
#: (the same family and split), "other gaps" one it draws in its figure beside it
FILES = {"evaluation": "evaluation-k5.json", "gaps": "gaps-mean-field-test.json",
         "other gaps": "gaps-full-rank-test.json"}  # fmt: skip


def _command(ws: Workspace, command: str, run: Path, where: Path) -> list[str]:
    return {
        "evaluate": ["evaluate", str(run), "--k", "2"],
        "gaps": ["gaps", str(run), "--points", "3", "--steps", "2"],
        "report": ["report", str(run)],
        "compare": ["compare", str(run), str(ws.run), "--out", str(where / "compared")],
        "resume": ["fit", "--resume", str(run), "--epochs", "2"],
    }[command]


Damage = bytes | Callable[[Path], object] | None


def _damaged(ws: Workspace, command: str, file: str, damage: Damage) -> Callable[[Path], list[str]]:
    """A copy of the trained run with ``file`` replaced by bytes, changed by a function of its
    path, or (None) deleted; and ``command`` on it."""

    def make(where: Path) -> list[str]:
        run = where / "run"
        shutil.copytree(ws.run, run)
        path = run / FILES.get(file, file)
        if damage is None:
            path.unlink()
        elif callable(damage):
            damage(path)
        else:
            path.write_bytes(damage)
        return _command(ws, command, run, where)

    return make


def _edit_json(change: Callable[[Any], Any]) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _a_directory(path: Path) -> None:
    if path.exists():
        path.unlink()
    path.mkdir()


JSON_DAMAGE: dict[str, Damage] = {
    "deleted": None, "emptied": b"", "binary": bytes(range(256)) * 4, "an array": b"[1]", "null": b"null",
    "invalid JSON": b"{", "nested too deeply": b"[" * 100_000, "a number": b"3",
}  # fmt: skip
RUN_DAMAGE: dict[tuple[str, str], Damage] = {
    **{("config.json", name): damage for name, damage in JSON_DAMAGE.items()},
    ("config.json", "an empty object"): b"{}",
    ("config.json", "an unknown key"): _edit_json(lambda c: {**c, "bogus": 1}),
    ("config.json", "another latent dimension"): _edit_json(lambda c: merge_tables(c, {"model": {"latent_dim": 3}})),
    ("config.json", "a null section"): _edit_json(lambda c: {**c, "model": None}),
    ("config.json", "a string for a number"): _edit_json(lambda c: merge_tables(c, {"train": {"lr": "0.1"}})),
    ("config.json", "NaN for a number"): lambda p: p.write_text(p.read_text().replace('"lr": 0.001', '"lr": NaN')),
    **{("summary.json", name): damage for name, damage in JSON_DAMAGE.items()},
    ("summary.json", "an empty object"): b"{}", ("summary.json", "a number for status"): b'{"status": 3}',
    ("summary.json", "an unknown status"): b'{"status": "paused"}',
    ("metrics.csv", "deleted"): None, ("metrics.csv", "truncated"): _cut, ("metrics.csv", "emptied"): b"",
    ("metrics.csv", "binary"): bytes(range(256)) * 4, ("metrics.csv", "a foreign table"): b"a,b\n1,2\n",
    ("metrics.csv", "header only"): lambda p: p.write_text(p.read_text().splitlines(keepends=True)[0]),
    ("metrics.csv", "a non-numeric epoch"): lambda p: p.write_text(p.read_text().replace("\n1,", "\nabc,", 1)),
    **{(file, name): JSON_DAMAGE[name] for file in ("evaluation", "gaps", "other gaps") for name in
       ("binary", "an array", "invalid JSON", "null")},
    ("other gaps", "missing keys"): b'{"family": "full-rank"}',
    ("evaluation", "missing keys"): b'{"n": 3}', ("evaluation", "a string for a number"): b'{"elbo": "x"}',
    ("gaps", "missing keys"): b'{"approximation_gap": 1.0}',
    ("gaps", "a string for a number"): _edit_json(lambda g: {**g, "amortization_gap": "0.5"}),
}  # fmt: skip
#: damage to config.json that leaves a valid config, of another model than the checkpoint's
MISMATCHES = ("an empty object", "another latent dimension")
#: changes a command may take in its stride (tried with every command)
BENIGN: dict[tuple[str, str], tuple[Damage, str]] = {
    ("summary.json", "status interrupted"): (b'{"status": "interrupted", "epochs_done": 1}', ACCEPT),
    ("summary.json", "status running, no fit holding the lock"): (b'{"status": "running", "epochs_done": 1}', ACCEPT),
    ("summary.json", "status diverged"): (b'{"status": "diverged", "diverged": {"epoch": 2, "step": 1}}', EITHER),
    ("metrics.csv", "an extra column"): (lambda p: p.write_text("\n".join(
        line + (",extra" if i == 0 else ",1") for i, line in enumerate(p.read_text().splitlines())) + "\n"), EITHER),
    ("unknown.txt", "an unknown file"): (b"hello", ACCEPT),
    (".lock", "a directory"): (_a_directory, EITHER),
    ("report.html", "a directory"): (_a_directory, EITHER),
    ("gaps.png", "a directory"): (_a_directory, EITHER),
}  # fmt: skip


def run_dir_cases(ws: Workspace) -> list[Case]:
    """Each damaged file of a run with every command that reads it (refused, naming the file);
    the harmless changes with every command; run paths that are no run; a run still written."""
    cases = []
    for (file, name), damage in RUN_DAMAGE.items():
        for command in (c for c in COMMANDS if file in READS[c]):
            # a valid config of another model: refused where the weights are loaded into it
            weights = name not in MISMATCHES or "checkpoint.pt" in READS[command]
            cases.append(Case("run directories", f"{command}: {FILES.get(file, file)} {name}",
                              _damaged(ws, command, file, damage), REFUSE if weights else EITHER,
                              (FILES.get(file, file), "does not match its config")))  # fmt: skip
    for (file, name), (damage, expect) in BENIGN.items():
        for command in COMMANDS:
            writes = {"report.html": "report", "gaps.png": "gaps"}.get(file) == command
            cases.append(Case("run directories", f"{command}: {file} {name}", _damaged(ws, command, file, damage),
                              REFUSE if writes else expect))  # fmt: skip
    places: dict[str, Callable[[Path], Path]] = {
        "a missing directory": lambda where: where / "missing", "a file": lambda where: _touch(where / "file"),
        "an empty directory": lambda where: where, "/": lambda where: Path("/"),
        "/proc/self": lambda where: Path("/proc/self"), "a config.json alone": _config_only(ws),
    }  # fmt: skip
    for name, place in places.items():
        for command in COMMANDS:
            expect = EITHER if name == "a config.json alone" and command in ("compare", "resume") else REFUSE
            cases.append(Case("run directories", f"{command}: {name}", lambda where, c=command, p=place: _command(
                ws, c, p(where), where), expect))  # fmt: skip
    return cases


def _touch(path: Path) -> Path:
    path.write_text("not a run\n")
    return path


def _config_only(ws: Workspace) -> Callable[[Path], Path]:
    def make(where: Path) -> Path:
        (where / "run").mkdir()
        shutil.copy(ws.run / "config.json", where / "run")
        return where / "run"

    return make


def _checkpoint_state(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    """The checkpoint as ``change`` makes it from the real one's state."""

    def write(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        torch.save(change(state), path)

    return write


def _without(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda state: {k: v for k, v in state.items() if k != key}


def _reshaped(state: dict[str, Any]) -> dict[str, Any]:
    """Weights of another model: the first tensor of the model one row longer."""
    name, tensor = next(iter(state["model"].items()))
    return {**state, "model": {**state["model"], name: torch.zeros(tensor.shape[0] + 1, *tensor.shape[1:])}}


def _nan_weights(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "model": {k: torch.full_like(v, math.nan) for k, v in state["model"].items()}}


CHECKPOINT_DAMAGE: dict[str, tuple[Damage, str]] = {
    "deleted": (None, REFUSE), "zero bytes": (b"", REFUSE), "random bytes": (bytes(range(256)) * 16, REFUSE),
    "truncated to half": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), REFUSE),
    "cut at the end": (lambda p: p.write_bytes(p.read_bytes()[:-100]), REFUSE),
    "a list": (lambda p: torch.save([1, 2], p), REFUSE), "a tensor": (lambda p: torch.save(torch.zeros(3), p), REFUSE),
    "an empty dict": (lambda p: torch.save({}, p), REFUSE),
    "no generator": (_checkpoint_state(_without("generator")), REFUSE),
    "no epoch": (_checkpoint_state(_without("epoch")), REFUSE),
    "no metrics": (_checkpoint_state(_without("metrics")), REFUSE),
    "a string for the epoch": (_checkpoint_state(lambda s: {**s, "epoch": "1"}), REFUSE),
    "another model's weights": (_checkpoint_state(_reshaped), REFUSE),
    "a Python object inside": (_checkpoint_state(lambda s: {**s, "extra": argparse.Namespace(a=1)}), REFUSE),
    "NaN weights": (_checkpoint_state(_nan_weights), EITHER),
    "a directory": (_a_directory, REFUSE),
    "a link to /dev/zero": (lambda p: (p.unlink(), p.symlink_to("/dev/zero")), REFUSE),
}  # fmt: skip


def checkpoint_cases(ws: Workspace) -> list[Case]:
    """Each damaged checkpoint.pt with every command that loads it."""
    return [
        Case("checkpoints", f"{command}: checkpoint.pt {name}", _damaged(ws, command, "checkpoint.pt", damage),
             EITHER if command == "resume" and name in NO_CHECKPOINT else expect, ("checkpoint",))
        for name, (damage, expect) in CHECKPOINT_DAMAGE.items() for command in COMMANDS
        if "checkpoint.pt" in READS[command]
    ]  # fmt: skip


#: no checkpoint (no file, or no regular file): a run stopped before its first one, which
#: ``avi fit --resume`` starts again from epoch 0
NO_CHECKPOINT = ("deleted", "a link to /dev/zero")


# --- report and compare inputs, output paths -----------------------------------------------------


def _copy(ws: Workspace, where: Path, change: Callable[[Path], object] | None = None) -> str:
    run = where / "run"
    shutil.copytree(ws.run, run)
    if change is not None:
        change(run)
    return str(run)


def report_compare_cases(ws: Workspace) -> list[Case]:
    """What ``avi report`` and ``avi compare`` are given: run lists, and what they write into."""
    run, gaussian, out = str(ws.run), str(ws.gaussian_run), lambda where: str(where / "out")
    table: list[tuple[str, list[Any], str]] = [
        ("compare (nothing)", ["compare", "--out", out], REFUSE),
        ("compare one run", ["compare", run, "--out", out], ACCEPT),
        ("compare a run twice", ["compare", run, run, "--out", out], EITHER),
        ("compare two models", ["compare", run, gaussian, "--out", out], ACCEPT),
        ("compare a run and a missing one", ["compare", run, lambda w: str(w / "missing"), "--out", out], REFUSE),
        ("compare a run and a file", ["compare", run, lambda w: str(_touch(w / "f")), "--out", out], REFUSE),
        ("compare a run and an empty directory", ["compare", run, lambda w: str(w), "--out", out], REFUSE),
        ("compare a run and /", ["compare", run, "/", "--out", out], REFUSE),
        ("compare where comparison.md is a directory", ["compare", run, "--out", lambda w: str(
            _mkdir(w / "out" / "comparison.md").parent)], REFUSE),
        ("compare where comparison.png is a directory", ["compare", run, "--out", lambda w: str(
            _mkdir(w / "out" / "comparison.png").parent)], REFUSE),
        ("report a run without evaluations", ["report", gaussian], ACCEPT),
        ("report where report.html is a directory", ["report", lambda w: _copy(
            ws, w, lambda r: _mkdir(r / "report.html"))], REFUSE),
        ("report where a figure is a directory", ["report", lambda w: _copy(
            ws, w, lambda r: (r / "curves.png").unlink(missing_ok=True) or _mkdir(r / "curves.png"))], REFUSE),
        ("report a run with an evaluation of other data", ["report", lambda w: _copy(ws, w, lambda r: shutil.copy(
            r / "evaluation-k5.json", r / "evaluation-x-8a0cbae7-k5.json"))], ACCEPT),
        ("report a run with an evaluation of another k", ["report", lambda w: _copy(ws, w, lambda r: shutil.copy(
            r / "evaluation-k5.json", r / "evaluation-k7.json"))], EITHER),
    ]  # fmt: skip
    cases = [Case("report and compare inputs", name, _argv(*argv), expect) for name, argv, expect in table]
    for command in ("report", "compare", "evaluate", "gaps"):
        cases.append(Case("report and compare inputs", f"{command}: a run still being written", _locked(ws, command),
                          REFUSE, ("still being written",)))  # fmt: skip
    return cases


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _locked(ws: Workspace, command: str) -> Callable[[Path], list[str]]:
    """The run, copied, its lock held by a process that sleeps (an ``avi fit`` writing it)."""

    def make(where: Path) -> list[str]:
        run = Path(_copy(ws, where))
        (run / "summary.json").write_text('{"status": "running", "epochs_done": 1}')
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / ".lock")], stdout=subprocess.PIPE)
        HOLDERS.append(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        return _command(ws, command, run, where)

    return make


HOLD_LOCK = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', " \
    "flush=True); time.sleep(300)"  # fmt: skip
#: the processes holding run locks, stopped at the end
HOLDERS: list[subprocess.Popen[bytes]] = []


def output_path_cases(ws: Workspace) -> list[Case]:
    """``--out`` of ``avi fit`` and ``avi compare``: paths that cannot be a directory, and some that can."""
    places: dict[str, tuple[Callable[[Path], str], str, str]] = {
        "an existing file": (lambda w: str(_touch(w / "f")), REFUSE, REFUSE),
        "under a file": (lambda w: str(_touch(w / "f") / "run"), REFUSE, REFUSE),
        "in /proc": (lambda w: "/proc/avi-bad-inputs", REFUSE, REFUSE),
        "in /sys": (lambda w: "/sys/avi-bad-inputs", REFUSE, REFUSE),
        "through a link into /proc": (lambda w: str(_link(w / "l", "/proc") / "run"), REFUSE, REFUSE),
        "a dangling link": (lambda w: str(_link(w / "l", w / "nowhere")), EITHER, EITHER),
        "/dev/null": (lambda w: "/dev/null", REFUSE, REFUSE),
        "a FIFO": (lambda w: str(_fifo(w / "fifo")), REFUSE, REFUSE),
        "an existing run": (lambda w: str(ws.run), REFUSE, EITHER),
        "an existing empty directory": (lambda w: str(_mkdir(w / "empty")), ACCEPT, ACCEPT),
        "a directory of other files": (lambda w: str(_touch(_mkdir(w / "other") / "notes.txt").parent), EITHER, EITHER),
        "a new nested directory": (lambda w: str(w / "a" / "b" / "c"), ACCEPT, ACCEPT),
        "the empty path": (lambda w: "", EITHER, EITHER),
        "a 300-character name": (lambda w: str(w / ("x" * 300)), REFUSE, REFUSE),
        "a trailing slash": (lambda w: str(w / "run") + "/", ACCEPT, ACCEPT),
    }  # fmt: skip
    cases = []
    for name, (place, fit, compare) in places.items():
        cases.append(Case("output paths", f"fit --out {name}", _argv("fit", str(ws.config), "--out", place), fit))
        cases.append(Case("output paths", f"compare --out {name}", _argv("compare", str(ws.run), "--out", place),
                          compare))  # fmt: skip
    return cases


def _link(path: Path, target: str | Path) -> Path:
    path.symlink_to(target)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# --- fuzzed option combinations ------------------------------------------------------------------

#: values of a flag by type that are plainly wrong for every flag of the type
FUZZ_BAD: dict[type, list[str]] = {int: ["abc", "1.5", "-1", "inf"], float: ["abc", "inf", "nan", ""],
                                   str: ["", "nonsense"], list: ["a,b", "-1", "0"]}  # fmt: skip
FUZZ_GOOD: dict[type, list[str]] = {int: ["1", "2", "3"], float: ["0.1", "0.5", "1"], list: ["8", "8,8", ""]}
#: good values of the text flags that are not a Literal's choices
FUZZ_TEXT: dict[str, list[str]] = {"model.name": ["vae", "ppca", "factor-analysis", "discrete-vae", "sbn"],
                                   "model.preset": ["kingma-welling", "burda-1l"], "data.source": ["synthetic"],
                                   "train.device": ["cpu", "auto"], "inference.encoder": ["nowhere.py:f"]}  # fmt: skip
#: flags left out of the fuzzing: their runs take minutes (compilation, aggressive training)
SLOW_FLAGS = ("train.compile", "remedies.aggressive")


def _good_values(flag: Flag) -> list[str]:
    section, key = flag.key.split(".")
    annotation = Config.model_fields[section].annotation.model_fields[key].annotation  # type: ignore[union-attr]
    choices = [str(c) for arg in (annotation, *get_args(annotation)) if get_origin(arg) is Literal
               for c in get_args(arg)]  # fmt: skip
    return choices or FUZZ_TEXT.get(flag.key) or FUZZ_GOOD[flag.type]


def fuzzed_cases(ws: Workspace, count: int) -> list[Case]:
    """``count`` random combinations of two to five flags of ``avi fit``, each value good (drawn
    from the flag's choices or small numbers) or, one time in six, plainly wrong: a combination
    with a wrong value is to be refused, any other may be."""
    rng = random.Random(25)
    flags = [flag for flag in FIT_FLAGS if flag.key not in SLOW_FLAGS]
    cases = []
    for number in range(count):
        argv, bad = [], False
        for flag in rng.sample(flags, rng.randint(2, 5)):
            if flag.type is bool:
                argv.append(flag.option)
                continue
            wrong = rng.random() < 1 / 6
            bad |= wrong
            argv += [flag.option, rng.choice(FUZZ_BAD[flag.type] if wrong else _good_values(flag))]
        cases.append(Case("fuzzed option combinations", f"#{number}: fit {' '.join(argv)}", _argv(
            "fit", str(ws.config), *argv, "--out", lambda w: str(w / "out")), REFUSE if bad else EITHER))  # fmt: skip
    return cases


# --- running the catalogue -----------------------------------------------------------------------


def catalogue(ws: Workspace, fuzzed: int) -> list[Case]:
    return [
        *data_file_cases(ws),
        *config_value_cases(ws),
        *fit_flag_cases(ws),
        *command_flag_cases(ws),
        *run_dir_cases(ws),
        *checkpoint_cases(ws),
        *report_compare_cases(ws),
        *output_path_cases(ws),
        *fuzzed_cases(ws, fuzzed),
    ]


def run_case(ws: Workspace, case: Case) -> dict[str, Any]:
    """Make the case's files, run it, judge it."""
    where = ws.fresh()
    try:
        argv = case.make(where)
    except Exception as err:  # a case that cannot be made is the benchmark's fault: say so
        return {"category": case.category, "name": case.name, "verdict": OTHER, "detail": f"not made: {err!r}"}
    if case.subprocess:
        outcome = run_subprocess(argv, where, limit=case.limit)
    else:
        outcome = run_in_process(argv, where, limit=case.limit, validate_only=case.validate_only)
    verdict, detail = judge(case, outcome)
    shutil.rmtree(where, ignore_errors=True)
    argv = [arg.replace(str(ws.root), "$WORK") for arg in argv]  # the scratch directory, by name
    return {"category": case.category, "name": case.name, "argv": argv, "expect": case.expect, "verdict": verdict,
            "detail": detail.replace(str(ws.root), "$WORK"), "seconds": round(outcome.seconds, 3)}  # fmt: skip


def table(results: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per category: tried, and how many of each verdict."""
    counts: dict[str, Counter[str]] = {}
    for r in results:
        counts.setdefault(r["category"], Counter())[r["verdict"]] += 1
    rows = {category: {"tried": sum(c.values()), **{v: c[v] for v in VERDICTS}} for category, c in counts.items()}
    rows["all"] = {key: sum(row[key] for row in rows.values()) for key in ("tried", *VERDICTS)}
    return rows


def markdown(rows: dict[str, dict[str, int]]) -> str:
    lines = ["| category | tried | clean | traceback | silently accepted | other |", "|---|---|---|---|---|---|"]
    lines += [f"| {category} | " + " | ".join(str(row[key]) for key in ("tried", *VERDICTS)) + " |"
              for category, row in rows.items()]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every third case and 30 fuzzed combinations")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one, removed)")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    with contextlib.ExitStack() as stack:
        root = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="avi-bad-inputs-")))
        ws = Workspace(root.resolve())
        ws.prepare()
        cases = catalogue(ws, 30 if args.quick else 150)[:: 3 if args.quick else 1]
        results = []
        try:
            for number, case in enumerate(cases, 1):
                results.append(run_case(ws, case))
                if results[-1]["verdict"] != CLEAN:
                    print(f"[{number}/{len(cases)}] {case.category}: {case.name}: {results[-1]['verdict']}: "
                          f"{results[-1]['detail'][:200]}", file=sys.stderr, flush=True)  # fmt: skip
        finally:
            for holder in HOLDERS:
                holder.kill()
                holder.wait()
    rows = table(results)
    report = {
        "table": rows,
        "failures": [r for r in results if r["verdict"] != CLEAN],
        "quick": args.quick,
        **run_facts(started),
    }
    write_report(args.out, report)
    print(markdown(rows))
    print(f"{len(report['failures'])} cases not clean; written to {args.out}")


if __name__ == "__main__":
    main()
