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
    labels = None
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.keys())
                if "x" in names:
                    x = archive["x"]
                    labels = archive["y"] if "y" in names else None
                elif len(names) == 1:
                    x = archive[names[0]]
                else:
                    raise DataError(f"data file {path} holds arrays {names}; name the observations 'x'")
        else:
            x = _read_csv(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, DataError):
            raise
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "pickled" in reason:  # numpy's word for any .npy it cannot parse without pickle
            reason = "not a numeric .npy array (corrupt, or holds Python objects)"
        raise DataError(f"cannot read data file {path}: {reason}") from None
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
