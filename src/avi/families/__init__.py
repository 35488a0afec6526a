"""Variational families q(z; lambda): lambda (B, P) -> Distribution with batch (B,), event (K,)."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families import kl as _kl  # noqa: F401  (registers the analytic KLs)
from avi.families.finite_flow import FiniteFlow
from avi.families.gaussian import FullRankGaussian, MeanFieldGaussian, inverse_softplus
from avi.families.hierarchical import HierarchicalFamily
from avi.families.planar import PlanarFamily
from avi.families.radial import RadialFamily
from avi.families.sylvester import SylvesterFamily

__all__ = [
    "FAMILIES",
    "Family",
    "FiniteFlow",
    "FullRankGaussian",
    "HierarchicalFamily",
    "MeanFieldGaussian",
    "PlanarFamily",
    "RadialFamily",
    "SylvesterFamily",
    "inverse_softplus",
    "make_family",
]


class Family(Protocol):
    """What a family offers: ``param_size`` P, lambda (B, P) -> q, and a starting lambda.

    Gaussian families and the finite flows (planar, radial, Sylvester: every flow parameter in
    lambda) are plain functions of lambda; zuko's flow families and the hierarchical family
    (q(z_l | z_(l-1)) of a model with several latent layers) are ``nn.Module``s whose weights are
    shared by all points (a posterior that holds one registers them).
    """

    name: str
    latent_dim: int
    param_size: int

    def __call__(self, params: Tensor) -> Distribution: ...

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor: ...


FAMILIES = ("mean-field", "full-rank", "iaf", "nsf", "planar", "radial", "sylvester")


def make_family(name: str, latent_dim: int) -> Family:
    """The family called ``name`` over R^latent_dim (flows with their default sizes)."""
    if name == "mean-field":
        return MeanFieldGaussian(latent_dim)
    if name == "full-rank":
        return FullRankGaussian(latent_dim)
    if name in ("iaf", "nsf"):
        from avi.families.flow import FlowFamily

        return FlowFamily(latent_dim, name)
    if name == "planar":
        return PlanarFamily(latent_dim)
    if name == "radial":
        return RadialFamily(latent_dim)
    if name == "sylvester":
        return SylvesterFamily(latent_dim)
    raise ConfigError(f"unknown variational family {name!r}; choose from {list(FAMILIES)}")
