"""Data: MNIST shipped by a package, synthetic draws from a model, and the user's own files."""

from avi.data.dataset import (
    BINARIZATIONS,
    Dataset,
    Splits,
    batch_sizes,
    bernoulli_draw,
    shard_batches,
)
from avi.data.files import load_array_file
from avi.data.mnist import load_mnist
from avi.data.standardize import moments, standardize

__all__ = [
    "BINARIZATIONS",
    "Dataset",
    "Splits",
    "batch_sizes",
    "bernoulli_draw",
    "load_array_file",
    "load_mnist",
    "moments",
    "shard_batches",
    "standardize",
]
