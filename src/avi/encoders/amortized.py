"""Amortized posteriors: an inference network maps x to the parameters of q(z | x)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families import Family
from avi.families.posterior import Posterior
from avi.nn import mlp

__all__ = ["AmortizedPosterior", "DenoisingEncoder", "mlp_encoder", "weight_normalize"]


def mlp_encoder(data_dim: int, hidden: Sequence[int], param_size: int, activation: str = "relu") -> nn.Module:
    """x (B, D) -> lambda (B, P) through an MLP; ``hidden=()`` gives a linear (affine) encoder."""
    return mlp([data_dim, *hidden, param_size], activation)


class DenoisingEncoder(nn.Module):
    """x -> encoder(x + sigma * eps), eps ~ N(0, I), in training mode only; x itself in
    evaluation mode (``module.eval()``, which avi's evaluation functions set).

    Shu, Bui, Zhao, Kochenderfer and Ermon (2018), amortized inference regularization: training
    the encoder on noisy inputs while the bound scores the clean x makes q(z|x) a smoother
    function of x (for exponential-family q, the optimal parameters at x become a kernel-weighted
    average of those at the training points), which can close the amortization gap on held-out
    points at some cost on the training points.
    """

    def __init__(self, encoder: nn.Module, sigma: float) -> None:
        super().__init__()
        if not sigma >= 0:
            raise ConfigError(f"the denoising noise scale must be non-negative, got {sigma}")
        self.encoder, self.sigma = encoder, sigma

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.sigma > 0:
            x = x + self.sigma * torch.randn_like(x)
        return self.encoder(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def weight_normalize(encoder: nn.Module) -> nn.Module:
    """Weight normalisation (Salimans and Kingma 2016) of every ``nn.Linear`` in ``encoder``,
    in place: each output row's weights become g * v / ||v|| with g and v trained
    (``torch.nn.utils.parametrizations.weight_norm``). Returns ``encoder``.

    Shu et al. (2018) use it to regularise the encoder's smoothness. Note that unconstrained g
    leaves the set of functions unchanged: the effect is through the optimisation.
    """
    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            nn.utils.parametrizations.weight_norm(module)
    return encoder


class AmortizedPosterior(Posterior):
    """q(z | x) = family(encoder(x)): one network shared by all data points (amortized VI).

    Inference on new data is one forward pass; ``index`` is accepted for interface parity with
    per-datapoint posteriors and ignored.
    """

    def __init__(self, encoder: nn.Module, family: Family) -> None:
        super().__init__()
        self.encoder, self.family = encoder, family

    def params(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """lambda(x): (B, P)."""
        return self.encoder(x)

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        return self.family(self.encoder(x))
