"""Deep latent Gaussian models (the VAE's generative side): p(z) = N(0, I) or a learned prior
(:mod:`avi.models.priors`), p(x|z) from an MLP or, for 28x28 images, transposed convolutions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.models.bernoulli import factorised_bernoulli
from avi.models.priors import MixtureOfGaussians
from avi.nn import ConvDecoder, check_image_dim, mlp

__all__ = ["NETWORKS", "VAEModel"]

LIKELIHOODS = ("bernoulli", "gaussian")
#: the decoder's architecture: an MLP, or (28x28 images only) transposed convolutions
NETWORKS = ("mlp", "conv")


class VAEModel(LatentVariableModel):
    """p(z) = N(0, I_K); p(x | z) = Bernoulli(logits = f(z)) or N(f(z), diag(sigma^2)) with a
    learned per-dimension sigma = softplus(rho). ``f`` is an MLP ``K -> hidden... -> D`` (Kingma
    and Welling 2014), or with ``network="conv"`` (D = 784, 28x28 images) a
    :class:`~avi.nn.ConvDecoder`: linear layers ``K -> hidden... -> 64x7x7``, then transposed
    convolutions to 32x14x14 and 1x28x28, plus a bias per pixel. With ``learned_prior``, a
    module whose ``forward()`` is a :class:`~avi.models.priors.MixtureOfGaussians`
    (:class:`~avi.models.priors.MoGPrior`, :class:`~avi.models.priors.VampPrior`), p(z) is that
    mixture, trained with the model.

    A Gaussian likelihood's starting point: ``loc`` (D,), the bias of f's output (default
    PyTorch's initialisation), and ``scale``, sigma, one number or one per dimension (D,)
    (default softplus(0) = 0.69). :func:`avi.runs.build.build_model` starts them at the training
    data's mean and standard deviation: a sigma far above the data's spread weighs the
    reconstruction term too little against the KL term, and the posterior collapses before
    sigma has shrunk (on scikit-learn's 8x8 digits in [0, 1], whose sd is 0.27, sigma = 0.69
    gave reconstructions no better than the mean image after 20 epochs).
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
        *,
        network: str = "mlp",
        loc: Tensor | None = None,
        scale: float | Tensor | None = None,
        learned_prior: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"unknown likelihood {likelihood!r}; choose from {list(LIKELIHOODS)}")
        self.data_dim, self.latent_dim, self.likelihood_name = data_dim, latent_dim, likelihood
        self.binary_data = likelihood == "bernoulli"
        self.network = network
        self.decoder = _decoder(network, data_dim, latent_dim, hidden, activation)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))
        self.learned_prior = learned_prior
        if likelihood == "gaussian":
            self.raw_scale = nn.Parameter(_raw_scale(scale, data_dim))
            if loc is not None:
                with torch.no_grad():
                    _output_bias(self.decoder).copy_(loc)
        elif loc is not None or scale is not None:
            raise ConfigError("loc and scale start a Gaussian likelihood; this model's is Bernoulli")

    def prior(self) -> Distribution:
        if self.learned_prior is not None:
            return cast(Distribution, self.learned_prior())
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1, validate_args=False)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw n pairs (x, z) from the joint, x (n, D), z (n, K): a learned prior's z from its
        mixture (:meth:`~avi.models.priors.MixtureOfGaussians.draw`), N(0, I)'s as the base does."""
        if self.learned_prior is None:
            return super().sample(n, generator)
        z = cast(MixtureOfGaussians, self.prior()).draw(n, generator)
        return self.sample_data(z, generator), z

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


def _decoder(network: str, data_dim: int, latent_dim: int, hidden: Sequence[int], activation: str) -> nn.Module:
    """f: z (..., K) -> (..., D), an MLP or a :class:`~avi.nn.ConvDecoder` (D = 784 only)."""
    if network == "mlp":
        return mlp([latent_dim, *hidden, data_dim], activation)
    if network != "conv":
        raise ConfigError(f"unknown network {network!r}; choose from {list(NETWORKS)}")
    check_image_dim(data_dim)
    return ConvDecoder(latent_dim, hidden, activation)


def _output_bias(decoder: nn.Module) -> Tensor:
    """The bias (D,) added to f's output: the conv decoder's per-pixel bias, the MLP's last layer's."""
    if isinstance(decoder, ConvDecoder):
        return decoder.bias
    return cast(nn.Linear, cast(nn.Sequential, decoder)[-1]).bias


def _raw_scale(scale: float | Tensor | None, data_dim: int) -> Tensor:
    """rho (D,) with softplus(rho) = sigma: rho = sigma + log(1 - exp(-sigma)) for a positive,
    finite sigma (a number or (D,)); 0 (sigma = 0.69) without one."""
    if scale is None:
        return torch.zeros(data_dim)
    sigma = torch.as_tensor(scale, dtype=torch.float32).expand(data_dim).clone()
    if not (torch.isfinite(sigma) & (sigma > 0)).all():
        raise ConfigError("the Gaussian likelihood's initial scale must be positive and finite")
    return sigma + torch.log(-torch.expm1(-sigma))
