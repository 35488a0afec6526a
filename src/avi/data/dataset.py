"""Data held as tensors, batches drawn by index, binarisation, and per-rank sharding."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from avi.errors import ConfigError, DataError

__all__ = ["BINARIZATIONS", "Dataset", "Splits", "batch_sizes", "bernoulli_draw", "shard_batches"]

BINARIZATIONS = ("dynamic", "static", "none")
_INT64_MIN = torch.iinfo(torch.int64).min


def bernoulli_threshold(p: Tensor) -> Tensor:
    """2^16 p - 2^15 - 1/2, in place: with u uniform on the int16 values {-2^15, ..., 2^15 - 1},
    u < threshold has probability ceil(2^16 p - 1/2) / 2^16, the multiple of 2^-16 nearest p
    (halves rounded down; float32 may round either way within 2^-10 of a half)."""
    return p.mul_(65536.0).sub_(32768.5)


def bernoulli_draw(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x ~ Bernoulli(p) elementwise, from 16 random bits per element: P(x = 1) is p rounded to
    a multiple of 2^-16 (:func:`bernoulli_threshold`), within 2^-17 of p; 0 and 1 are exact.

    Four draws come from each random 64-bit word, so the generator (one Mersenne-twister thread
    on a CPU) makes a quarter of the draws of ``uniform_`` and the whole draw is about 2.5x
    faster. ``p`` (float32 or float64) is a fresh tensor that this function overwrites with the
    draw (a gathered batch); half-precision ``p`` is drawn in float32 and returned in its dtype.
    """
    if not p.is_floating_point():
        raise DataError(f"Bernoulli probabilities must be floating point, got {p.dtype}")
    if p.dtype not in (torch.float32, torch.float64):
        return bernoulli_draw(p.float(), generator).to(p.dtype)
    n = p.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=p.device)
    u = words.random_(_INT64_MIN, None, generator=generator).view(torch.int16)[:n].view(p.shape)
    return bernoulli_threshold(p).gt_(u)


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
        """The observations of the points ``index`` (a 1-D integer tensor): (B, D); a fresh
        binarisation x ~ Bernoulli(p) of a dynamic data set (:func:`bernoulli_draw`)."""
        x = torch.index_select(self.x, 0, index)  # a row gather, several times faster than x[index]
        return bernoulli_draw(x, generator) if self.dynamic else x

    def subset(self, index: Tensor | slice) -> Dataset:
        labels = None if self.labels is None else self.labels[index]
        return replace(self, x=self.x[index], labels=labels)

    def binarized(self, seed: int) -> Dataset:
        """One fixed Bernoulli draw of a dynamic data set (static binarisation with ``seed``),
        drawn on the CPU, so that data on any device gets the same draw."""
        if not self.dynamic:
            return self
        generator = torch.Generator().manual_seed(seed)
        return replace(self, x=torch.bernoulli(self.x.cpu(), generator=generator).to(self.x.device), dynamic=False)

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
    a step together form the batch a single process would see. A last batch of fewer than
    ``world_size`` points is padded with the epoch's first points to one point per rank (as
    torch's DistributedSampler pads), since a rank with no points cannot take part in the step.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in a world of size {world_size}")
    if batch_size % world_size:
        raise ConfigError(f"batch size {batch_size} is not divisible by the world size {world_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start, size in zip(range(0, n, batch_size), batch_sizes(n, batch_size, world_size), strict=True):
        batch = order[start : start + size] if start + size <= n else order[torch.arange(start, start + size) % n]
        yield batch[rank::world_size]


def batch_sizes(n: int, batch_size: int, world_size: int = 1) -> list[int]:
    """Sizes of the global batches of an epoch of :func:`shard_batches`: ``batch_size``, and
    a shorter last one padded to at least ``world_size`` points."""
    return [max(world_size, min(batch_size, n - start)) for start in range(0, n, batch_size)]
