"""A convolutional VAE on 28x28 binary images, with its own encoder, for avi (docs/custom-models.md).

    z ~ N(0, I_K),    x_d | z ~ Bernoulli(sigmoid(g(z)_d)),  d = 1..784,

g a transposed-convolution decoder to logits; q(z | x) = N(mu(x), diag sigma(x)^2) with mu, sigma
from the convolutional encoder of :func:`conv_encoder`. Fit it on MNIST, binarised per batch:

    avi fit --model examples/conv_vae.py:ConvVAE --encoder examples/conv_vae.py:conv_encoder \
        --set data.binarize=dynamic --latent-dim 16 --epochs 10
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from avi.models import LatentVariableModel

SIDE = 28


def _check_images(data_dim: int) -> None:
    if data_dim != SIDE * SIDE:
        raise ValueError(f"the conv VAE takes {SIDE}x{SIDE} images ({SIDE * SIDE} values), not {data_dim}")


class ConvVAE(LatentVariableModel):
    """p(z) = N(0, I_K); p(x | z) = prod_d Bernoulli(x_d; logits g(z)_d), g: z -> 64x7x7 -> 32x14x14 -> 1x28x28."""

    binary_data = True  # avi checks that the data are {0, 1}: use data.binarize = "dynamic"

    def __init__(self, data_dim: int, latent_dim: int = 16, channels: int = 32) -> None:
        super().__init__()
        _check_images(data_dim)
        self.data_dim, self.latent_dim, self.channels = data_dim, latent_dim, channels
        self.project = nn.Linear(latent_dim, 2 * channels * 7 * 7)
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),  # 7 -> 14
            nn.ReLU(),
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1),  # 14 -> 28
        )
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def prior(self) -> Distribution:
        """N(0, I): batch shape (), event shape (K,)."""
        return Independent(Normal(self.loc, self.scale), 1)

    def logits(self, z: Tensor) -> Tensor:
        """g(z) for z (..., K): (..., 784); the leading dimensions are flattened for the convolutions."""
        h = self.project(z.reshape(-1, self.latent_dim)).view(-1, 2 * self.channels, 7, 7)
        return self.decoder(h).reshape(*z.shape[:-1], self.data_dim)

    def likelihood(self, z: Tensor) -> Distribution:
        """Independent Bernoullis for z (S, B, K): batch shape (S, B), event shape (784,); the mean is the image."""
        return Independent(Bernoulli(logits=self.logits(z)), 1)

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x ~ p(x | z), drawn with ``generator``."""
        return torch.bernoulli(torch.sigmoid(self.logits(z)), generator=generator)


def conv_encoder(data_dim: int, param_size: int, channels: int = 32) -> nn.Module:
    """x (B, 784) -> lambda (B, P): two stride-2 convolutions (28 -> 14 -> 7) and a linear layer to
    the family's P parameters (mean-field Gaussian: P = 2K, the means and softplus^-1 of the standard deviations)."""
    _check_images(data_dim)
    return nn.Sequential(
        nn.Unflatten(1, (1, SIDE, SIDE)),
        nn.Conv2d(1, channels, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * channels * 7 * 7, param_size),
    )
