"""Gaussian variational families q(z; lambda) built on torch.distributions.

A family maps unconstrained parameters lambda of shape (B, P) to a distribution with batch
shape (B,) and event shape (K,). Scales go through softplus so every lambda is valid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

__all__ = ["FullRankGaussian", "MeanFieldGaussian", "inverse_softplus"]


def inverse_softplus(y: Tensor) -> Tensor:
    """softplus^-1(y) = y + log(1 - exp(-y)) for y > 0."""
    return y + torch.log(-torch.expm1(-y))


class MeanFieldGaussian:
    """q(z) = prod_k N(z_k; m_k, s_k^2); lambda = (m, softplus^-1(s)), P = 2K."""

    name = "mean-field"

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = latent_dim
        self.param_size = 2 * latent_dim

    def __call__(self, params: Tensor) -> Distribution:
        loc, raw_scale = params.split(self.latent_dim, dim=-1)
        return Independent(Normal(loc, F.softplus(raw_scale), validate_args=False), 1, validate_args=False)

    def params_of(self, q: Distribution) -> Tensor:
        """The lambda that gives q (inverse of ``__call__``): (B, P)."""
        return torch.cat([q.mean, inverse_softplus(q.stddev)], dim=-1)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """lambda of N(0, scale^2 I) for n points: (n, P)."""
        raw = inverse_softplus(torch.tensor(scale))
        return torch.cat([torch.zeros(n, self.latent_dim), raw.expand(n, self.latent_dim)], dim=-1)


class FullRankGaussian:
    """q(z) = N(z; m, L L^T) with L lower-triangular, diag(L) = softplus(raw) > 0;
    lambda = (m, raw diagonal, strictly-lower entries row by row), P = K + K(K+1)/2."""

    name = "full-rank"

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = latent_dim
        self.param_size = latent_dim + latent_dim * (latent_dim + 1) // 2
        self._rows, self._cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)

    def _strictly_lower(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Row and column indices of the strictly-lower entries, on ``device``."""
        return self._rows.to(device), self._cols.to(device)

    def __call__(self, params: Tensor) -> Distribution:
        k = self.latent_dim
        loc, raw_diag, off = params.split([k, k, self.param_size - 2 * k], dim=-1)
        tril = torch.diag_embed(F.softplus(raw_diag))
        rows, cols = self._strictly_lower(params.device)
        tril[..., rows, cols] = off
        return MultivariateNormal(loc, scale_tril=tril, validate_args=False)

    def params_of(self, q: MultivariateNormal) -> Tensor:
        """The lambda that gives q (inverse of ``__call__``): (B, P)."""
        tril = q.scale_tril
        diag = inverse_softplus(torch.diagonal(tril, dim1=-2, dim2=-1))
        rows, cols = self._strictly_lower(tril.device)
        off = tril[..., rows, cols]
        return torch.cat([q.mean, diag, off], dim=-1)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """lambda of N(0, scale^2 I) for n points: (n, P)."""
        k = self.latent_dim
        raw = inverse_softplus(torch.tensor(scale))
        return torch.cat([torch.zeros(n, k), raw.expand(n, k), torch.zeros(n, self.param_size - 2 * k)], dim=-1)
