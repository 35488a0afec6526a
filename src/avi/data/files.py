"""The user's own data from .npy, .npz or .csv files.

Nothing in a file is trusted before it is checked: the path must be a regular file (a FIFO or
a device would block or never end), and an array's header must agree with the bytes that
follow it before any memory is allocated for it.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from avi.errors import DataError

__all__ = ["SUFFIXES", "load_array_file"]

SUFFIXES = (".npy", ".npz", ".csv")


def load_array_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read observations (N, D), N, D >= 1, and, where the file has them, integer labels (N,).

    - ``.npy``: one 2-D array (any byte order; returned in the machine's).
    - ``.npz``: the array ``x`` (labels ``y`` if present), or the file's only array.
    - ``.csv``: comma-separated numbers, one row per point, UTF-8 with or without a byte-order
      mark; a first row with a field that is neither empty nor a number is a header.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"data file {path} has suffix {path.suffix!r}; use one of {list(SUFFIXES)}")
    if not path.is_file():  # checked before opening: opening a FIFO blocks until a writer comes
        raise DataError(f"data file {path} is not a regular file; give a file saved on disk")
    try:
        x, labels = _read(path, suffix)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "pickled" in reason:  # numpy's word for any .npy it cannot parse without pickle
            reason = "not a numeric .npy array (corrupt, or holds Python objects)"
        raise DataError(f"cannot read data file {path}: {reason}") from None
    return _checked(path, x, labels)


def _read(path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray | None]:
    if suffix == ".npy":
        with path.open("rb") as f:
            return _read_npy(f, path.stat().st_size, f"cannot read data file {path}: it"), None
    if suffix == ".npz":
        return _read_npz(path)
    return _read_csv(path), None


def _read_npy(f: IO[bytes], size: int, what: str) -> np.ndarray:
    """The array of the .npy stream ``f`` of ``size`` bytes, once its header is known to agree
    with the file: no Python objects, and prod(shape) * itemsize bytes after the header (``what``
    starts the error messages)."""
    version = np.lib.format.read_magic(f)
    # 3.0 differs from 2.0 only in decoding the header as UTF-8, the same for the ASCII of numeric dtypes
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if dtype.hasobject:
        raise DataError(f"{what} holds Python objects, not numbers; save a numeric array")
    needed = math.prod(shape) * dtype.itemsize
    present = size - f.tell()
    if needed > present:
        raise DataError(
            f"{what} has a header claiming shape {shape} of {dtype} ({needed} bytes) but only {present} bytes "
            "of data (truncated or corrupt); save the array again"
        )
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The archive's ``x`` (and ``y`` where present), or its only array."""
    with zipfile.ZipFile(path) as archive:
        members = {name.removesuffix(".npy"): archive.getinfo(name) for name in archive.namelist()}

        def member(name: str) -> np.ndarray:
            info = members[name]
            with archive.open(info) as f:
                return _read_npy(f, info.file_size, f"cannot read data file {path}: its array {name!r}")

        if "x" in members:
            return member("x"), member("y") if "y" in members else None
        if len(members) == 1:
            return member(next(iter(members))), None
    raise DataError(f"data file {path} holds arrays {list(members)}; name the observations 'x'")


def _checked(path: Path, x: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """x as a 2-D array of real numbers (booleans as 0.0/1.0) in native byte order with at least
    one row and column, and labels of one non-negative integer per row, or a :class:`DataError`
    naming what is wrong."""
    if x.ndim != 2:
        raise DataError(f"data in {path} must be 2-D (points, features), got shape {x.shape}")
    if x.dtype == np.bool_:
        x = x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"data in {path} must be real numbers, got dtype {x.dtype}")
    if 0 in x.shape:
        raise DataError(f"data file {path} holds no {'rows' if x.shape[0] == 0 else 'columns'} (shape {x.shape})")
    if labels is not None:
        labels = _checked_labels(path, labels, x.shape[0])
    return _native(x), labels


def _checked_labels(path: Path, labels: np.ndarray, n: int) -> np.ndarray:
    """Labels as class indices 0, 1, ... (integers, or whole floats), one per row."""
    if labels.shape != (n,):
        raise DataError(f"labels 'y' in {path} must have shape ({n},), got {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise DataError(
            f"labels 'y' in {path} must be integer class indices, got dtype {labels.dtype}; "
            "map the classes to 0, 1, ... before saving"
        )
    if labels.size and labels.min() < 0:
        raise DataError(f"labels 'y' in {path} must be class indices 0, 1, ..., got {labels.min()}")
    return _native(labels)


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in the machine's byte order (torch reads no other)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _read_csv(path: Path) -> np.ndarray:
    """Numbers of a CSV file: a header row is skipped, any other row must be numbers only."""
    skip = _header_lines(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns on an empty file; we raise below
            x = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, encoding="utf-8-sig")
    except ValueError as err:  # say where, in the user's numbering, not numpy's
        problem = _csv_problem(path, skip)
        raise (err if problem is None else DataError(f"cannot read data file {path}: {problem}")) from None
    if x.size == 0:
        raise DataError(f"data file {path} holds no rows")
    return x


def _fields(line: str) -> list[str]:
    """The comma-separated fields of a CSV line, a ``#`` comment and whitespace removed."""
    content = line.split("#", 1)[0].strip()
    return [field.strip() for field in content.split(",")] if content else []


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _header_lines(path: Path) -> int:
    """How many lines to skip: up to the first row with content where that row is a header (a
    field that is neither empty nor a number), else 0."""
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            fields = _fields(line)
            if fields:
                return number if any(field and not _is_number(field) for field in fields) else 0
    return 0


def _csv_problem(path: Path, skip: int) -> str | None:
    """The first field after line ``skip`` that is empty or not a number, or the first row of
    another width, as rows and columns count in a spreadsheet (from 1, the header a row)."""
    width = None
    with path.open(encoding="utf-8-sig") as f:
        for row, line in enumerate(f, 1):
            fields = _fields(line) if row > skip else []
            if not fields:
                continue
            width = len(fields) if width is None else width
            if len(fields) != width:
                return f"row {row} has {len(fields)} fields, the rows above {width}"
            for column, field in enumerate(fields, 1):
                if not field:
                    return f"row {row}, column {column} is empty; fill it in or delete the row"
                if not _is_number(field):
                    return f"row {row}, column {column} is {field!r}, not a number"
    return None
