"""Bayesian regressions: one global latent, the weight vector w in R^D, with the data as context.

- :class:`BayesianLinearRegression`: w ~ N(0, s0^2 I), y | X, w ~ N(X w, sigma^2 I), sigma known.
  Exact posterior N(Lambda^-1 h, Lambda^-1) with Lambda = I/s0^2 + X^T X/sigma^2 and
  h = X^T y/sigma^2 (Bishop, PRML, section 3.3); the full conditional of each w_d is Normal, so
  Gibbs sweeps the D coordinates.
- :class:`BayesianLogisticRegression`: w ~ N(0, s0^2 I), y_n | x_n, w ~ Bernoulli(sigmoid(x_n^T w)).
  No closed form: a long NUTS run is the reference.

:func:`breast_cancer` loads scikit-learn's Wisconsin breast-cancer data (569 x 30, shipped with
the package), standardised, with an intercept column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal

from avi.baselines.targets import Target, gaussian_conditional_update
from avi.errors import AviError, ConfigError, DataError

__all__ = ["BayesianLinearRegression", "BayesianLogisticRegression", "breast_cancer", "synthetic_regression"]


def _design(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    X, y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] == 0:
        raise DataError(f"regression data must be X (N, D) and y (N,), got {tuple(X.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(X).all() and torch.isfinite(y).all()):
        raise DataError("regression data contains NaN or infinite values")
    return X, y


def _prior_sd(value: float) -> float:
    if not value > 0:
        raise ConfigError(f"prior and noise standard deviations must be positive, got {value}")
    return float(value)


class BayesianLinearRegression(Target):
    """w ~ N(0, s0^2 I_D); y ~ N(X w, sigma^2 I_N) with sigma known; exact Gaussian posterior."""

    def __init__(self, X: Tensor, y: Tensor, prior_sd: float = 1.0, noise_sd: float = 1.0) -> None:
        self.X, self.y = _design(X, y)
        self.prior_sd, self.noise_sd = _prior_sd(prior_sd), _prior_sd(noise_sd)
        self.dim = self.gibbs_blocks = self.X.shape[1]
        eye = torch.eye(self.dim, dtype=torch.float64)
        self.precision = eye / self.prior_sd**2 + self.X.T @ self.X / self.noise_sd**2
        self.shift = (self.X.T @ self.y / self.noise_sd**2)[:, None]

    def log_joint(self, theta: Tensor) -> Tensor:
        resid = self.y - theta @ self.X.T
        d, n = self.dim, self.y.numel()
        log_prior = -0.5 * (theta**2).sum(-1) / self.prior_sd**2 - d * torch.log(
            torch.tensor(self.prior_sd * (2 * torch.pi) ** 0.5)
        )
        log_lik = -0.5 * (resid**2).sum(-1) / self.noise_sd**2 - n * torch.log(
            torch.tensor(self.noise_sd * (2 * torch.pi) ** 0.5)
        )
        return log_prior + log_lik

    def exact_posterior(self) -> Distribution:
        cov = torch.cholesky_inverse(torch.linalg.cholesky(self.precision))
        return MultivariateNormal((cov @ self.shift)[:, 0], covariance_matrix=cov)

    def sample_conditional(self, theta: Tensor, block: int, generator: torch.Generator) -> Tensor:
        return gaussian_conditional_update(theta, block, self.precision, self.shift, generator)


class BayesianLogisticRegression(Target):
    """w ~ N(0, s0^2 I_D); y_n ~ Bernoulli(sigmoid(x_n^T w)), y in {0, 1}."""

    def __init__(self, X: Tensor, y: Tensor, prior_sd: float = 1.0) -> None:
        self.X, self.y = _design(X, y)
        if not ((self.y == 0) | (self.y == 1)).all():
            raise DataError("logistic regression labels must be 0 or 1")
        self.prior_sd = _prior_sd(prior_sd)
        self.dim = self.X.shape[1]

    def log_joint(self, theta: Tensor) -> Tensor:
        logits = theta @ self.X.T
        log_lik = (self.y * logits - F.softplus(logits)).sum(-1)
        log_prior = -0.5 * (theta**2).sum(-1) / self.prior_sd**2 - self.dim * torch.log(
            torch.tensor(self.prior_sd * (2 * torch.pi) ** 0.5)
        )
        return log_prior + log_lik


def synthetic_regression(
    n: int, d: int, generator: torch.Generator, *, correlation: float = 0.8, noise_sd: float = 1.0
) -> tuple[Tensor, Tensor]:
    """X (n, d) with equicorrelated standard-normal features (correlation ``correlation``, which
    makes the posterior correlated, so mean-field is visibly worse than full-rank) and
    y = X w + noise, w ~ N(0, I); float64."""
    shared = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    own = torch.randn(n, d, generator=generator, dtype=torch.float64)
    X = correlation**0.5 * shared + (1 - correlation) ** 0.5 * own
    w = torch.randn(d, generator=generator, dtype=torch.float64)
    y = X @ w + noise_sd * torch.randn(n, generator=generator, dtype=torch.float64)
    return X, y


def breast_cancer() -> tuple[Tensor, Tensor]:
    """scikit-learn's breast-cancer data: X (569, 31) = [1, standardised features], y (569,) in {0, 1}."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as err:
        raise AviError("the breast-cancer data needs scikit-learn: pip install 'avi[baselines]'") from err
    features, labels = load_breast_cancer(return_X_y=True)
    X = torch.as_tensor(features, dtype=torch.float64)
    X = (X - X.mean(0)) / X.std(0)
    return torch.cat([torch.ones(X.shape[0], 1, dtype=torch.float64), X], 1), torch.as_tensor(
        labels, dtype=torch.float64
    )
