"""Data held as tensors, batches drawn by index, binarisation, and per-rank sharding."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from avi.errors import ConfigError

__all__ = ["BINARIZATIONS", "Dataset", "Splits", "shard_batches"]

BINARIZATIONS = ("dynamic", "static", "none")


@dataclass(frozen=True)
class Dataset:
    """Observations ``x`` (N, D) and optional ``labels`` (N,).

    With ``dynamic=True``, x holds probabilities in [0, 1] and every batch is a fresh draw
    x_b ~ Bernoulli(x[index]) (dynamic binarisation: a new sample each time a point is seen).
    """

    x: Tensor
    labels: Tensor | None = None
    dynamic: bool = False

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The observations of the points ``index``: (B, D); a fresh binarisation x ~ Bernoulli(p)
        of a dynamic data set, drawn as 1[u < p] with u ~ U[0, 1) (several times faster on a CPU than
        ``torch.bernoulli`` with a generator, which runs on one thread)."""
        x = self.x[index]
        if not self.dynamic:
            return x
        return torch.empty_like(x).uniform_(generator=generator).lt_(x)

    def subset(self, index: Tensor | slice) -> Dataset:
        labels = None if self.labels is None else self.labels[index]
        return replace(self, x=self.x[index], labels=labels)

    def binarized(self, seed: int) -> Dataset:
        """One fixed Bernoulli draw of a dynamic data set (static binarisation with ``seed``)."""
        if not self.dynamic:
            return self
        generator = torch.Generator().manual_seed(seed)
        return replace(self, x=torch.bernoulli(self.x, generator=generator), dynamic=False)

    def to(self, device: torch.device | str) -> Dataset:
        labels = None if self.labels is None else self.labels.to(device)
        return replace(self, x=self.x.to(device), labels=labels)


class Splits(NamedTuple):
    """Training, validation and test data; validation may be empty."""

    train: Dataset
    validation: Dataset
    test: Dataset


def shard_batches(
    n: int, batch_size: int, generator: torch.Generator, *, rank: int = 0, world_size: int = 1, shuffle: bool = True
) -> Iterator[Tensor]:
    """Indices of one epoch's batches for process ``rank`` of ``world_size``.

    Every rank draws the same permutation from its identically seeded ``generator`` and takes
    every ``world_size``-th point of each global batch of ``batch_size``, so the ranks' shards of
    a step together form the batch a single process would see.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in a world of size {world_size}")
    if batch_size % world_size:
        raise ConfigError(f"batch size {batch_size} is not divisible by the world size {world_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size][rank::world_size]
