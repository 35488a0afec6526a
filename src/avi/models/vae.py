"""Deep latent Gaussian models (the VAE's generative side): p(z) = N(0, I), p(x|z) from an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.models.bernoulli import factorised_bernoulli
from avi.nn import mlp

__all__ = ["VAEModel"]

LIKELIHOODS = ("bernoulli", "gaussian")


class VAEModel(LatentVariableModel):
    """p(z) = N(0, I_K); p(x | z) = Bernoulli(logits = f(z)) or N(f(z), diag(sigma^2)) with a
    learned per-dimension sigma. ``f`` is an MLP ``K -> hidden... -> D`` (Kingma and Welling 2014).
    """

    prior_loc: Tensor
    prior_scale: Tensor

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        likelihood: str = "bernoulli",
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"unknown likelihood {likelihood!r}; choose from {list(LIKELIHOODS)}")
        self.data_dim, self.latent_dim, self.likelihood_name = data_dim, latent_dim, likelihood
        self.binary_data = likelihood == "bernoulli"
        self.decoder = mlp([latent_dim, *hidden, data_dim], activation)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))
        if likelihood == "gaussian":
            self.raw_scale = nn.Parameter(torch.zeros(data_dim))

    def prior(self) -> Distribution:
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1, validate_args=False)

    def likelihood(self, z: Tensor) -> Distribution:
        out = self.decoder(z)
        if self.likelihood_name == "bernoulli":
            return factorised_bernoulli(out)
        return Independent(Normal(out, F.softplus(self.raw_scale), validate_args=False), 1, validate_args=False)

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        out = self.decoder(z)
        if self.likelihood_name == "bernoulli":
            return torch.bernoulli(torch.sigmoid(out), generator=generator)
        return out + F.softplus(self.raw_scale) * torch.randn(
            out.shape, generator=generator, dtype=out.dtype, device=out.device
        )
