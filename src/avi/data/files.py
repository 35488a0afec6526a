"""The user's own data from .npy, .npz or .csv files."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from avi.errors import DataError

__all__ = ["SUFFIXES", "load_array_file"]

SUFFIXES = (".npy", ".npz", ".csv")


def load_array_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read observations (N, D) and, where the file has them, labels (N,).

    - ``.npy``: one 2-D array.
    - ``.npz``: the array ``x`` (labels ``y`` if present), or the file's only array.
    - ``.csv``: comma-separated numbers, one row per point; a non-numeric first row is a header.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"data file {path} has suffix {path.suffix!r}; use one of {list(SUFFIXES)}")
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
        return np.load(path, allow_pickle=False), None
    if suffix == ".npz":
        return _read_npz(path)
    return _read_csv(path), None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The archive's ``x`` (and ``y`` where present), or its only array."""
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.keys())
        if "x" in names:
            return archive["x"], archive["y"] if "y" in names else None
        if len(names) == 1:
            return archive[names[0]], None
    raise DataError(f"data file {path} holds arrays {names}; name the observations 'x'")


def _checked(path: Path, x: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """x as a 2-D array of real numbers (booleans as 0.0/1.0) and labels of one per row, or a
    :class:`DataError` naming what is wrong."""
    if x.ndim != 2:
        raise DataError(f"data in {path} must be 2-D (points, features), got shape {x.shape}")
    if x.dtype == np.bool_:
        x = x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"data in {path} must be real numbers, got dtype {x.dtype}")
    if labels is not None and labels.shape != (x.shape[0],):
        raise DataError(f"labels 'y' in {path} must have shape ({x.shape[0]},), got {labels.shape}")
    return x, labels


def _read_csv(path: Path) -> np.ndarray:
    with path.open() as f:
        first = f.readline()
    try:
        [float(v) for v in first.split(",")]
        skip = 0
    except ValueError:
        skip = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # numpy warns on an empty file; we raise below
        x = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    if x.size == 0:
        raise DataError(f"data file {path} holds no rows")
    return x
