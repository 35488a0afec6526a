"""Conjugate models with closed-form posteriors (Gelman et al., Bayesian Data Analysis, ch. 2-3).

Each is a :class:`~avi.baselines.targets.Target` over one global latent with i.i.d. data:

- :class:`NormalNormal`: mu ~ N(m0, s0^2), x_i | mu ~ N(mu, sigma^2), sigma known.
  Posterior N(m_n, s_n^2) with 1/s_n^2 = 1/s0^2 + n/sigma^2, m_n = s_n^2 (m0/s0^2 + sum x/sigma^2).
- :class:`BetaBernoulli`: p ~ Beta(a, b), x_i | p ~ Bernoulli(p). Posterior Beta(a + s, b + n - s),
  s = sum x.
- :class:`DirichletCategorical`: p ~ Dir(alpha), x_i | p ~ Categorical(p). Posterior
  Dir(alpha + counts).

The latent is a vector of length K (1 for the first two), so every posterior is a torch
``Distribution`` with event shape (K,). The full conditional of the only block is the posterior
itself, so a Gibbs sweep is one exact draw.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Beta, Dirichlet, Distribution, Independent, Normal, constraints

from avi.baselines.targets import Target
from avi.errors import ConfigError, DataError

__all__ = ["BetaBernoulli", "DirichletCategorical", "NormalNormal", "sample_dirichlet"]


def _vector(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 1 or x.numel() == 0:
        raise DataError(f"{name} data must be a non-empty 1-D array, got shape {tuple(x.shape)}")
    if not torch.isfinite(x.double()).all():
        raise DataError(f"{name} data contains NaN or infinite values")
    return x


def _positive(name: str, value: Tensor | float) -> Tensor:
    value = torch.as_tensor(value, dtype=torch.float64)
    if not (value > 0).all():
        raise ConfigError(f"{name} must be positive, got {value.tolist()}")
    return value


def sample_dirichlet(concentration: Tensor, generator: torch.Generator) -> Tensor:
    """A draw from Dir(concentration) (..., K) by normalised Gamma(alpha_k, 1) draws."""
    gammas = torch._standard_gamma(concentration, generator=generator)
    return gammas / gammas.sum(-1, keepdim=True)


class NormalNormal(Target):
    """mu ~ N(m0, s0^2); x_i ~ N(mu, sigma^2) with sigma known; latent (mu,), K = 1."""

    dim = 1

    def __init__(self, x: Tensor, prior_mean: float = 0.0, prior_sd: float = 1.0, noise_sd: float = 1.0) -> None:
        self.x = _vector(x, "Normal").to(torch.float64)
        self.prior = Normal(torch.tensor(float(prior_mean), dtype=torch.float64), _positive("prior_sd", prior_sd))
        self.noise_sd = _positive("noise_sd", noise_sd)
        self.gibbs_blocks = 1

    def log_joint(self, theta: Tensor) -> Tensor:
        mu = theta[..., 0]
        n, total, squares = self.x.numel(), self.x.sum(), (self.x**2).sum()
        # sum_i log N(x_i; mu, sigma^2) from the sufficient statistics n, sum x, sum x^2
        log_lik = -0.5 * (squares - 2 * mu * total + n * mu**2) / self.noise_sd**2 - n * torch.log(
            self.noise_sd * (2 * torch.pi) ** 0.5
        )
        return self.prior.log_prob(mu) + log_lik

    def exact_posterior(self) -> Distribution:
        precision = 1 / self.prior.scale**2 + self.x.numel() / self.noise_sd**2
        mean = (self.prior.loc / self.prior.scale**2 + self.x.sum() / self.noise_sd**2) / precision
        return Independent(Normal(mean.reshape(1), precision.rsqrt().reshape(1)), 1)

    def sample_conditional(self, theta: Tensor, block: int, generator: torch.Generator) -> Tensor:
        posterior = self.exact_posterior()
        eps = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        return posterior.mean + posterior.stddev * eps


class BetaBernoulli(Target):
    """p ~ Beta(a, b); x_i ~ Bernoulli(p); latent (p,) in (0, 1), K = 1."""

    dim = 1
    support = constraints.independent(constraints.unit_interval, 1)

    def __init__(self, x: Tensor, a: float = 1.0, b: float = 1.0) -> None:
        x = _vector(x, "Bernoulli")
        if not ((x == 0) | (x == 1)).all():
            raise DataError("Bernoulli data must be 0 or 1")
        self.x = x.to(torch.float64)
        self.a, self.b = _positive("a", a), _positive("b", b)
        self.successes, self.n = self.x.sum(), self.x.numel()
        self.gibbs_blocks = 1

    def log_joint(self, theta: Tensor) -> Tensor:
        p = theta[..., 0]
        prior = Beta(self.a, self.b, validate_args=False).log_prob(p)
        return prior + self.successes * torch.log(p) + (self.n - self.successes) * torch.log1p(-p)

    def _posterior_concentrations(self) -> tuple[Tensor, Tensor]:
        return self.a + self.successes, self.b + self.n - self.successes

    def exact_posterior(self) -> Distribution:
        a, b = self._posterior_concentrations()
        return Independent(Beta(a.reshape(1), b.reshape(1)), 1)

    def sample_conditional(self, theta: Tensor, block: int, generator: torch.Generator) -> Tensor:
        a, b = self._posterior_concentrations()
        concentration = torch.stack([a, b]).expand(*theta.shape[:-1], 2).to(theta.dtype)
        return sample_dirichlet(concentration, generator)[..., :1]


class DirichletCategorical(Target):
    """p ~ Dir(alpha); x_i ~ Categorical(p); latent p on the simplex of R^K."""

    support = constraints.simplex

    def __init__(self, x: Tensor, alpha: Tensor) -> None:
        self.alpha = _positive("alpha", alpha)
        if self.alpha.ndim != 1 or self.alpha.numel() < 2:
            raise ConfigError(
                f"alpha must be a vector of at least 2 concentrations, got shape {tuple(self.alpha.shape)}"
            )
        self.dim = self.alpha.numel()
        x = _vector(x, "categorical")
        if x.is_floating_point() and not (x == x.round()).all() or not ((x >= 0) & (x < self.dim)).all():
            raise DataError(f"categorical data must be integers in 0..{self.dim - 1}")
        self.counts = torch.bincount(x.long(), minlength=self.dim).to(torch.float64)
        self.gibbs_blocks = 1

    def log_joint(self, theta: Tensor) -> Tensor:
        prior = Dirichlet(self.alpha, validate_args=False).log_prob(theta)
        return prior + (self.counts * torch.log(theta)).sum(-1)

    def exact_posterior(self) -> Distribution:
        return Dirichlet(self.alpha + self.counts)

    def sample_conditional(self, theta: Tensor, block: int, generator: torch.Generator) -> Tensor:
        concentration = (self.alpha + self.counts).expand(theta.shape).to(theta.dtype)
        return sample_dirichlet(concentration, generator)
