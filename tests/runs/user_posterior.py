"""A user's own posterior and a model that cannot draw images, for the evaluation-side tests."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution

from avi.families.posterior import Posterior
from avi.models.base import LatentVariableModel


class UserPosterior(Posterior):
    """q(z | x) = N(W x + b, softplus(V x + c)^2): one of no avi class, counting its calls.
    ``amortized=False`` declares it needs per-point inference (it has none to offer)."""

    def __init__(self, data_dim: int, latent_dim: int, *, amortized: bool = True) -> None:
        super().__init__()
        self.net = nn.Linear(data_dim, 2 * latent_dim)
        self.amortized = amortized
        self.calls = 0

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        self.calls += 1
        loc, scale = self.net(x).chunk(2, dim=-1)
        return Independent(Normal(loc, F.softplus(scale) + 1e-3), 1)


class DrawlessModel(LatentVariableModel):
    """A trained model seen through a likelihood with no closed-form mean, and no ``sample_data``."""

    def __init__(self, inner: LatentVariableModel) -> None:
        super().__init__()
        self.inner, self.data_dim, self.latent_dim = inner, inner.data_dim, inner.latent_dim

    def prior(self) -> Distribution:
        return self.inner.prior()

    def likelihood(self, z: Tensor) -> Distribution:
        return TransformedDistribution(self.inner.likelihood(z), [])
