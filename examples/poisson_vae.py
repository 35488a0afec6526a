"""A Poisson VAE for count data, as a model of your own for avi (docs/custom-models.md).

    z ~ N(0, I_K),    x_d | z ~ Poisson(exp(f(z)_d)),  d = 1..D,

f an MLP decoder to log-rates. Write synthetic counts and fit them:

    python examples/poisson_vae.py counts.npy
    avi fit --model examples/poisson_vae.py:PoissonVAE --data counts.npy --latent-dim 2 \
        --set model.args.hidden=32 --epochs 20
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, Poisson

from avi.models import LatentVariableModel

#: log-rates are clamped here so that exp() cannot overflow early in training
MAX_LOG_RATE = 15.0


class PoissonVAE(LatentVariableModel):
    """p(z) = N(0, I_K); p(x | z) = prod_d Poisson(x_d; exp(f(z)_d)), f: R^K -> R^D an MLP."""

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, data_dim))
        # buffers, not tensors made in prior(): they follow model.to(device)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def prior(self) -> Distribution:
        """N(0, I): batch shape (), event shape (K,)."""
        return Independent(Normal(self.loc, self.scale), 1)

    def rate(self, z: Tensor) -> Tensor:
        """exp(f(z)) for z (..., K): (..., D)."""
        return self.decoder(z).clamp(max=MAX_LOG_RATE).exp()

    def likelihood(self, z: Tensor) -> Distribution:
        """Independent Poissons for z (S, B, K): batch shape (S, B), event shape (D,)."""
        return Independent(Poisson(self.rate(z)), 1)

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x ~ p(x | z), drawn with ``generator``."""
        return torch.poisson(self.rate(z), generator=generator)


def synthetic_counts(n: int = 1000, data_dim: int = 20, latent_dim: int = 2, seed: int = 0) -> np.ndarray:
    """n count vectors (n, data_dim) whose log-rates are linear in a latent_dim-dimensional Gaussian."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, latent_dim))
    weights = rng.standard_normal((latent_dim, data_dim)) * 0.5
    return rng.poisson(np.exp(z @ weights + 1.0)).astype(np.float32)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/poisson_vae.py OUT.npy")
    np.save(sys.argv[1], synthetic_counts())
    print(sys.argv[1])
