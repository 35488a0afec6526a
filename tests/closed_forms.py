"""Closed forms for linear-Gaussian models, written independently of avi's estimators.

For x = W z + mu + eps, z ~ N(0, I_K), eps ~ N(0, Psi) and a Gaussian q(z) = N(m, S):

    E_q[log p(x|z)] = -1/2 sum_d [log(2 pi psi_d) + ((x - W m - mu)_d^2 + (W S W^T)_dd) / psi_d]
    KL(q || N(0, I)) = 1/2 [tr S + m^T m - K - log det S]
    ELBO(q) = E_q[log p(x|z)] - KL(q || N(0, I)) = log p(x) - KL(q || p(z|x)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal

from avi.models import LinearGaussian

__all__ = [
    "best_mean_field_gap",
    "gaussian_moments",
    "linear_gaussian_elbo",
    "linear_gaussian_reconstruction_variance",
    "make_ppca",
    "prior_kl",
]


def make_ppca(noise_var: float | Tensor = 0.5) -> LinearGaussian:
    """A float64 linear-Gaussian model with D = 5, K = 2 and a strongly correlated posterior.

    The second column of W is 0.8 times the first plus noise, so W^T W (hence the posterior
    precision) has a large off-diagonal term and mean-field is visibly worse than full-rank.
    A (D,) ``noise_var`` gives factor analysis. Parameters are frozen.
    """
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 2, generator=g, dtype=torch.float64)
    W[:, 1] = 0.8 * W[:, 0] + 0.6 * W[:, 1]
    mu = torch.randn(5, generator=g, dtype=torch.float64)
    return LinearGaussian.from_parameters(W, mu, noise_var).requires_grad_(False)


def gaussian_moments(q: Distribution) -> tuple[Tensor, Tensor]:
    """Mean (B, K) and covariance (B, K, K) of a full-rank or diagonal Gaussian q."""
    if isinstance(q, MultivariateNormal):
        return q.loc, q.covariance_matrix
    return q.mean, torch.diag_embed(q.variance)


def prior_kl(q: Distribution) -> Tensor:
    """KL(q || N(0, I)) = 1/2 [tr S + m^T m - K - log det S], (B,)."""
    m, S = gaussian_moments(q)
    k = m.shape[-1]
    trace = torch.diagonal(S, dim1=-2, dim2=-1).sum(-1)
    return 0.5 * (trace + (m * m).sum(-1) - k - torch.logdet(S))


def linear_gaussian_elbo(model: LinearGaussian, q: Distribution, x: Tensor) -> Tensor:
    """The exact ELBO of a Gaussian q under a linear-Gaussian model, (B,)."""
    m, S = gaussian_moments(q)
    W, psi = model.W, model.noise_var
    resid = x - m @ W.T - model.mu
    spread = torch.einsum("dk,bkl,dl->bd", W, S, W)  # diag(W S W^T)
    reconstruction = -0.5 * (torch.log(2 * math.pi * psi) + (resid**2 + spread) / psi).sum(-1)
    return reconstruction - prior_kl(q)


def best_mean_field_gap(S: Tensor) -> Tensor:
    """KL from the best factorised Gaussian to N(m, S): 1/2 [sum log diag(S^-1) + log det S]."""
    precision = torch.linalg.inv(S)
    return 0.5 * (torch.diagonal(precision, dim1=-2, dim2=-1).log().sum(-1) + torch.logdet(S))


def linear_gaussian_reconstruction_variance(
    model: LinearGaussian, q: Distribution, x: Tensor
) -> Tensor:
    """Var_{z~q}[log p(x|z)] for a Gaussian q = N(m, S) under a linear-Gaussian model, (B,).

    With a = Psi^-1/2 (x - W m - mu) and C = Psi^-1/2 W S W^T Psi^-1/2, log p(x|z) is a constant
    minus Q/2, Q = ||a - v||^2 with v ~ N(0, C); Gaussian moments give
    Var(Q) = 4 a^T C a + 2 tr(C^2), so the variance is a^T C a + tr(C^2) / 2.
    """
    m, S = gaussian_moments(q)
    scale = model.noise_var.rsqrt()
    a = (x - m @ model.W.T - model.mu) * scale
    w_scaled = model.W * scale[:, None]
    C = w_scaled @ S @ w_scaled.T
    return torch.einsum("bd,bde,be->b", a, C, a) + 0.5 * (C @ C).diagonal(dim1=-2, dim2=-1).sum(-1)
