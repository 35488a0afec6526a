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
    """What a family offers: ``param_size`` P, lambda (B, P) -> q, and a starting lambda.

    Gaussian families are plain functions of lambda; flow families are ``nn.Module``s whose
    weights are shared by all points (a posterior that holds one registers them).
    """

    name: str
    latent_dim: int
    param_size: int

    def __call__(self, params: Tensor) -> Distribution: ...

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor: ...


FAMILIES = ("mean-field", "full-rank", "iaf", "nsf")


def make_family(name: str, latent_dim: int) -> Family:
    """The family called ``name`` over R^latent_dim (flows with their default sizes)."""
    if name == "mean-field":
        return MeanFieldGaussian(latent_dim)
    if name == "full-rank":
        return FullRankGaussian(latent_dim)
    if name in ("iaf", "nsf"):
        from avi.families.flow import FlowFamily

        return FlowFamily(latent_dim, name)
    raise ConfigError(f"unknown variational family {name!r}; choose from {list(FAMILIES)}")
