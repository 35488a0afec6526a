"""Posterior-collapse diagnostics."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["active_units", "posterior_mean_variance"]


@torch.no_grad()
def posterior_mean_variance(posterior: nn.Module, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """Cov_x(E_q[z | x]) per latent dimension, (K,): how much each dimension's posterior mean
    moves across data points. Means come from ``q.mean``; for distributions without a closed-form
    mean (flows), from 100 samples."""
    means = []
    for start in range(0, x.shape[0], batch_size):
        index = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
        q = posterior(x[index], index)
        try:
            means.append(q.mean)
        except NotImplementedError:
            means.append(q.sample((100,)).mean(0))
    return torch.cat(means).var(0)


def active_units(posterior: nn.Module, x: Tensor, *, threshold: float = 0.01) -> int:
    """Burda, Grosse and Salakhutdinov (2016): dimension u is active if Cov_x(E_q[z_u | x]) > 0.01."""
    return int((posterior_mean_variance(posterior, x) > threshold).sum())
