"""Standardised data: each dimension shifted by its training mean and divided by its training sd."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from avi.errors import DataError

__all__ = ["moments", "standardize"]


def moments(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-dimension mean and standard deviation (the 1/N one) of x (N, D), computed in float64;
    a constant dimension gets sd 1, so that standardising maps it to 0 instead of dividing by 0.

    >>> moments(torch.tensor([[0.0, 2.0], [2.0, 2.0]]))
    ([1.0, 2.0], [1.0, 1.0])
    """
    x64 = x.double()
    sd, mean = torch.std_mean(x64, dim=0, correction=0)
    sd = torch.where(x64.amax(0) == x64.amin(0), 1.0, sd)
    return mean.tolist(), sd.tolist()


def standardize(x: Tensor, mean: Sequence[float], sd: Sequence[float], name: str = "data") -> Tensor:
    """(x - mean) / sd per dimension, for x (N, D) and mean, sd of length D; a :class:`DataError`
    naming ``name`` where the lengths differ from D."""
    if len(mean) != x.shape[1] or len(sd) != x.shape[1]:
        raise DataError(
            f"{name} has dimension {x.shape[1]} but the run standardises {len(mean)} dimensions "
            f"(data.mean has {len(mean)} entries, data.sd {len(sd)})"
        )
    return (x - torch.tensor(mean, dtype=x.dtype, device=x.device)) / torch.tensor(sd, dtype=x.dtype, device=x.device)
