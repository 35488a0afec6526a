"""The mean and variance of a stochastic gradient over repeated draws, per parameter group.

Use it to compare gradient estimators on your own model: fix the parameters and the data,
give a function that draws once and returns the objective (a scalar to maximise), and read the
per-element mean and variance of its gradient over ``num_draws`` independent draws.

Example:
    >>> import torch
    >>> w = torch.zeros(2, requires_grad=True)
    >>> m = gradient_moments(lambda: (w * torch.randn(2)).sum(), {"w": w}, num_draws=10)
    >>> m["w"].mean.shape, m["w"].variance.shape
    (torch.Size([2]), torch.Size([2]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from avi.errors import ConfigError

__all__ = ["GradientMoments", "gradient_moments"]


class GradientMoments(NamedTuple):
    """Per-element mean and unbiased variance of one parameter's gradient over the draws, and
    ``total_variance``, the variance summed over its elements (trace of the covariance)."""

    mean: Tensor
    variance: Tensor
    total_variance: float


def gradient_moments(
    objective: Callable[[], Tensor], params: Mapping[str, Tensor], *, num_draws: int = 100
) -> dict[str, GradientMoments]:
    """d objective() / d params over ``num_draws`` >= 2 calls, summarised per named parameter.

    ``objective`` is called once per draw and must return a scalar (e.g. the mean over a batch
    of ``objective(model, posterior(x), x).value``); each call draws fresh randomness. A
    parameter the objective does not reach gets a zero gradient.
    """
    if num_draws < 2:
        raise ConfigError(f"num_draws must be at least 2 to estimate a variance, got {num_draws}")
    names = list(params)
    tensors = [params[n] for n in names]
    draws: list[list[Tensor]] = [[] for _ in names]
    for _ in range(num_draws):
        gs = torch.autograd.grad(objective(), tensors, allow_unused=True)
        for i, (g, p) in enumerate(zip(gs, tensors, strict=True)):
            draws[i].append(torch.zeros_like(p) if g is None else g.detach())
    out = {}
    for name, draw in zip(names, draws, strict=True):
        stacked = torch.stack(draw)
        var = stacked.var(0)
        out[name] = GradientMoments(stacked.mean(0), var, float(var.sum()))
    return out
