"""Reading the user's .npy/.npz/.csv files, and the errors that name what is wrong with them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

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
