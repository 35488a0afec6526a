"""Variational families q(z; lambda): lambda (B, P) -> Distribution with batch (B,), event (K,)."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families import kl as _kl  # noqa: F401  (registers the analytic KLs)
from avi.families.gaussian import FullRankGaussian, MeanFieldGaussian, inverse_softplus

__all__ = ["FAMILIES", "Family", "FullRankGaussian", "MeanFieldGaussian", "inverse_softplus", "make_family"]


class Family(Protocol):
    """What a family offers: ``param_size`` P, lambda -> q, q -> lambda, and a starting lambda."""

    name: str
    latent_dim: int
    param_size: int

    def __call__(self, params: Tensor) -> Distribution: ...

    def params_of(self, q: Distribution) -> Tensor: ...

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor: ...


FAMILIES: dict[str, type] = {"mean-field": MeanFieldGaussian, "full-rank": FullRankGaussian}


def make_family(name: str, latent_dim: int) -> Family:
    """The family called ``name`` over R^latent_dim."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown variational family {name!r}; choose from {sorted(FAMILIES)}")
    return FAMILIES[name](latent_dim)
