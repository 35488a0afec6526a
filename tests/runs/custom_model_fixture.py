"""A user's model named by module path in the tests (``tests.runs.custom_model_fixture:SmallPoissonVAE``).

A plain ``nn.Module`` with ``prior()``, ``likelihood(z)``, ``data_dim`` and ``latent_dim``, not a
:class:`~avi.models.LatentVariableModel` subclass: avi adapts it (:func:`avi.models.base.as_model`).
Its constructor takes no ``latent_dim``: the latent size is its own argument, ``latent``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, Poisson


class SmallPoissonVAE(nn.Module):
    """p(z) = N(0, I_K); p(x | z) = prod_d Poisson(x_d; exp(W z + b)_d): a linear decoder to log-rates."""

    def __init__(self, data_dim: int, latent: int = 2) -> None:
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent
        self.decoder = nn.Linear(latent, data_dim)
        self.register_buffer("loc", torch.zeros(latent))

    def prior(self) -> Distribution:
        return Independent(Normal(self.loc, torch.ones_like(self.loc)), 1)

    def likelihood(self, z: Tensor) -> Distribution:
        return Independent(Poisson(self.decoder(z).clamp(max=15).exp()), 1)


def failing_encoder(data_dim: int, param_size: int) -> nn.Module:
    """An encoder factory that returns no module: ``avi fit`` must say so in one line."""
    return "not a module"  # type: ignore[return-value]
