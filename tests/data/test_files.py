"""Reading the user's .npy/.npz/.csv files, and the errors that name what is wrong with them."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from avi.data import load_array_file
from avi.errors import DataError

X = np.array([[0.0, 1.5, -2.0], [3.0, 4.0, 5.25]])


def test_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", X)
    x, labels = load_array_file(tmp_path / "d.npy")
    np.testing.assert_array_equal(x, X)
    assert labels is None


def test_npz_with_x_and_y(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=X, y=np.array([7, 8]), other=np.zeros(5))
    x, labels = load_array_file(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(labels, [7, 8])


def test_npz_with_x_only_or_a_single_unnamed_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=X)
    np.savez(tmp_path / "b.npz", X)
    for name in ("a.npz", "b.npz"):
        x, labels = load_array_file(tmp_path / name)
        np.testing.assert_array_equal(x, X)
        assert labels is None


@pytest.mark.parametrize("header", [False, True])
def test_csv_with_and_without_header(tmp_path: Path, header: bool) -> None:
    text = ("a,b,c\n" if header else "") + "0,1.5,-2\n3,4,5.25\n"
    (tmp_path / "d.csv").write_text(text)
    x, labels = load_array_file(tmp_path / "d.csv")
    np.testing.assert_array_equal(x, X)
    assert labels is None


def test_csv_with_one_column_is_2d(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("1\n2\n3\n")
    x, _ = load_array_file(tmp_path / "d.csv")
    assert x.shape == (3, 1)


def _write(path: Path, content: object) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    elif path.suffix == ".npz":
        np.savez(path, **content)
    else:
        np.save(path, content)


def _truncated_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=X)
    return buffer.getvalue()[:60]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.npy", b"these bytes are not an array", "cannot read data file"),
        ("bad.npz", _truncated_npz(), "cannot read data file"),
        ("bad.csv", "1,2\nx,3\n", "cannot read data file"),
        ("ragged.csv", "1,2\n3\n", "cannot read data file"),
        ("empty.csv", "", "holds no rows"),
        ("header-only.csv", "a,b\n", "holds no rows"),
        ("flat.npy", np.arange(4.0), r"must be 2-D \(points, features\), got shape \(4,\)"),
        (
            "cube.npy",
            np.zeros((2, 3, 4)),
            r"must be 2-D \(points, features\), got shape \(2, 3, 4\)",
        ),
        ("text.npy", np.array([["a", "b"]]), "must be real numbers"),
        ("complex.npy", np.ones((2, 2), dtype=complex), "must be real numbers"),
        ("objects.npy", np.array([[1, None]], dtype=object), "cannot read data file"),
        ("two.npz", {"a": X, "b": X}, r"holds arrays \['a', 'b'\]; name the observations 'x'"),
        ("labels.npz", {"x": X, "y": np.arange(3)}, r"labels 'y' .* must have shape \(2,\)"),
    ],
)
@pytest.mark.filterwarnings("ignore:loadtxt. input contained no data")
def test_bad_files_raise_data_error_naming_the_problem(
    tmp_path: Path, name: str, content: object, message: str
) -> None:
    path = tmp_path / name
    _write(path, content)
    with pytest.raises(DataError, match=message) as info:
        load_array_file(path)
    assert name in str(info.value)  # the message names the file
    assert "\n" not in str(info.value)  # and is one line


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_array_file(tmp_path / "nowhere.npy")


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("1,2\n")
    with pytest.raises(
        DataError, match=r"suffix '\.txt'; use one of \['\.npy', '\.npz', '\.csv'\]"
    ):
        load_array_file(tmp_path / "d.txt")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\ufeff0,1.5,-2\n3,4,5.25\n", X),  # Excel's byte-order mark before a first data row
        ("\ufeffa,b,c\r\n0,1.5,-2\r\n3,4,5.25\r\n", X),  # and before a header, with Windows line ends
        ("# made by hand\n0,1.5,-2 # first\n\n3,4,5.25\n", X),  # comments and blank lines
        ("a,,c\n0,1.5,-2\n3,4,5.25\n", X),  # a header may have an empty field
    ],
)
def test_csv_keeps_every_data_row(tmp_path: Path, text: str, expected: np.ndarray) -> None:
    (tmp_path / "d.csv").write_bytes(text.encode())
    x, _ = load_array_file(tmp_path / "d.csv")
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,,-2\n3,4,5.25\n", r"row 1, column 2 is empty; fill it in or delete the row$"),
        ("\ufeff0,1.5,\n3,4,5.25\n", r"row 1, column 3 is empty"),
        ("a,b,c\n0,1.5,-2\n3,,5.25\n", r"row 3, column 2 is empty"),
        ("a,b\n1,2\nx,3\n", r"row 3, column 1 is 'x', not a number$"),
        ("1,2\n3\n", r"row 2 has 1 fields, the rows above 2$"),
    ],
)
def test_csv_bad_field_is_named_by_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "d.csv").write_bytes(text.encode())
    with pytest.raises(DataError, match=message) as info:
        load_array_file(tmp_path / "d.csv")
    assert str(info.value).startswith(f"cannot read data file {tmp_path / 'd.csv'}: ")


def _npy_with_header(shape: tuple[int, ...], data: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def test_npy_header_is_checked_against_the_file_before_reading(tmp_path: Path) -> None:
    (tmp_path / "huge.npy").write_bytes(_npy_with_header((2, 10**12), bytes(16)))
    message = r"huge\.npy: it has a header claiming shape \(2, 1000000000000\) of float64 .* only 16 bytes"
    with pytest.raises(DataError, match=message):
        load_array_file(tmp_path / "huge.npy")


def test_npz_member_header_is_checked_before_reading(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("x.npy", _npy_with_header((10**6, 10**6), bytes(16)))
    with pytest.raises(DataError, match=r"huge\.npz: its array 'x' has a header claiming shape \(1000000, 1000000\)"):
        load_array_file(tmp_path / "huge.npz")


@pytest.mark.parametrize("save", [np.save, np.savez, np.savez_compressed])
def test_big_endian_arrays_come_back_in_native_order(tmp_path: Path, save: Callable[..., None]) -> None:
    path = tmp_path / ("d.npy" if save is np.save else "d.npz")
    if save is np.save:
        save(path, X.astype(">f8"))
    else:
        save(path, x=X.astype(">f4"), y=np.array([1, 0], dtype=">i8"))
    x, labels = load_array_file(path)
    assert x.dtype.isnative and (labels is None or labels.dtype.isnative)
    np.testing.assert_array_equal(torch.as_tensor(x).numpy(), X)  # torch reads native order only
    if labels is not None:
        np.testing.assert_array_equal(torch.as_tensor(labels).numpy(), [1, 0])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.npy")  # opening it for reading would block until a writer comes
    with pytest.raises(DataError, match=r"x\.npy is not a regular file"):
        load_array_file(tmp_path / "x.npy")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(DataError, match=r"x\.csv is not a regular file"):
        load_array_file(tmp_path / "x.csv")


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.array(["a", "b"]), r"labels 'y' in .*d\.npz must be integer class indices, got dtype <U1; map the"),
        (np.array([0.5, 1.0]), "must be integer class indices, got dtype float64"),
        (np.array([-1, 0]), r"must be class indices 0, 1, \.\.\., got -1"),
    ],
)
def test_labels_that_are_not_class_indices(tmp_path: Path, y: np.ndarray, message: str) -> None:
    np.savez(tmp_path / "d.npz", x=X, y=y)
    with pytest.raises(DataError, match=message):
        load_array_file(tmp_path / "d.npz")


def test_whole_float_labels_become_integers(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=X, y=np.array([1.0, 0.0]))
    _, labels = load_array_file(tmp_path / "d.npz")
    assert labels is not None and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [1, 0])


@pytest.mark.parametrize(("shape", "what"), [((0, 3), "rows"), ((2, 0), "columns")])
def test_empty_arrays_are_refused(tmp_path: Path, shape: tuple[int, int], what: str) -> None:
    np.save(tmp_path / "e.npy", np.zeros(shape))
    with pytest.raises(DataError, match=rf"e\.npy holds no {what} \(shape \({shape[0]}, {shape[1]}\)\)"):
        load_array_file(tmp_path / "e.npy")
