"""Linear-Gaussian latent-variable models: PPCA and factor analysis (exact inference known).

x = W z + mu + eps, z ~ N(0, I_K), eps ~ N(0, Psi) with Psi = s2 I (PPCA, Tipping and Bishop
1999) or Psi diagonal (factor analysis). Marginal: x ~ N(mu, W W^T + Psi). Posterior:
z | x ~ N(M^-1 W^T Psi^-1 (x - mu), M^-1) with M = I + W^T Psi^-1 W.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel

__all__ = ["LinearGaussian", "ppca_max_log_likelihood"]


class LinearGaussian(LatentVariableModel):
    """PPCA (``noise="isotropic"``) or factor analysis (``noise="diagonal"``).

    Parameters: loading matrix ``W`` (D, K), mean ``mu`` (D,), noise variance through
    ``raw_noise`` (softplus; one value for PPCA, D values for factor analysis).
    """

    def __init__(self, data_dim: int, latent_dim: int, noise: str = "isotropic") -> None:
        super().__init__()
        if noise not in ("isotropic", "diagonal"):
            raise ConfigError(f"unknown noise model {noise!r}; choose 'isotropic' or 'diagonal'")
        self.data_dim, self.latent_dim, self.noise = data_dim, latent_dim, noise
        self.W = nn.Parameter(torch.randn(data_dim, latent_dim) / math.sqrt(latent_dim))
        self.mu = nn.Parameter(torch.zeros(data_dim))
        self.raw_noise = nn.Parameter(torch.zeros(1 if noise == "isotropic" else data_dim))

    @classmethod
    def from_parameters(cls, W: Tensor, mu: Tensor, noise_var: Tensor | float) -> LinearGaussian:
        """A model with the given loading matrix (D, K), mean (D,) and noise variance (scalar or (D,))."""
        noise_var = torch.as_tensor(noise_var, dtype=W.dtype)
        model = cls(W.shape[0], W.shape[1], "isotropic" if noise_var.numel() == 1 else "diagonal")
        model = model.to(device=W.device, dtype=W.dtype)
        with torch.no_grad():
            model.W.copy_(W)
            model.mu.copy_(mu)
            # softplus^-1(v) = v + log(1 - exp(-v))
            model.raw_noise.copy_((noise_var + torch.log(-torch.expm1(-noise_var))).reshape(-1))
        return model

    @property
    def noise_var(self) -> Tensor:
        """The diagonal of Psi, shape (D,)."""
        return F.softplus(self.raw_noise).expand(self.data_dim)

    def prior(self) -> Distribution:
        zero = self.W.new_zeros(self.latent_dim)
        return Independent(Normal(zero, zero + 1, validate_args=False), 1, validate_args=False)

    def likelihood(self, z: Tensor) -> Distribution:
        loc = z @ self.W.T + self.mu
        return Independent(Normal(loc, self.noise_var.sqrt(), validate_args=False), 1, validate_args=False)

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(z.shape[:-1] + (self.data_dim,), generator=generator, dtype=z.dtype, device=z.device)
        return z @ self.W.T + self.mu + eps * self.noise_var.sqrt()

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(mu, W W^T + Psi)."""
        cov = self.W @ self.W.T + torch.diag(self.noise_var)
        return MultivariateNormal(self.mu, covariance_matrix=cov, validate_args=False)

    def exact_log_marginal(self, x: Tensor) -> Tensor:
        """log p(x) for x: (B, D) -> (B,)."""
        return self.marginal().log_prob(x)

    def exact_posterior(self, x: Tensor) -> MultivariateNormal:
        """p(z | x) = N(M^-1 W^T Psi^-1 (x - mu), M^-1), M = I + W^T Psi^-1 W; batch (B,)."""
        w_scaled = self.W / self.noise_var[:, None]  # Psi^-1 W, (D, K)
        precision = torch.eye(self.latent_dim, dtype=self.W.dtype, device=self.W.device) + self.W.T @ w_scaled
        cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        mean = (x - self.mu) @ w_scaled @ cov
        return MultivariateNormal(mean, covariance_matrix=cov.expand(x.shape[0], -1, -1), validate_args=False)


def ppca_max_log_likelihood(x: Tensor, latent_dim: int) -> Tensor:
    """The maximal mean log-likelihood per point of PPCA on x (Tipping and Bishop 1999).

    With l_1 >= ... >= l_D the eigenvalues of the sample covariance and s2 = mean(l_{K+1..D}):
    -1/2 [D log 2 pi + sum_{j<=K} log l_j + (D - K) log s2 + D]; for K >= D the full-covariance
    Gaussian's, -1/2 [D log 2 pi + sum_j log l_j + D].
    """
    n, d = x.shape
    centred = x - x.mean(0)
    eig = torch.linalg.eigvalsh(centred.T @ centred / n).flip(0)
    noise = (d - latent_dim) * eig[latent_dim:].mean().log() if latent_dim < d else 0.0
    return -0.5 * (d * math.log(2 * math.pi) + eig[:latent_dim].log().sum() + noise + d)
