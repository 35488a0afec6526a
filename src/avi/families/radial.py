"""Radial flows (Rezende and Mohamed 2015): F(z) = z + beta h(r) (z - z_ref), h(r) = 1 / (alpha + r),
r = |z - z_ref|.

log |det dF/dz| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r). Invertible when
beta >= -alpha (their appendix A.2): alpha = softplus(a), beta = softplus(g) - alpha for any raw
(z_ref, a, g). With gamma = alpha + beta > 0 both factors are ratios of positive terms:
1 + beta h = (gamma + r) / (alpha + r) and 1 + beta h + beta h' r = (alpha gamma + 2 alpha r + r^2) / (alpha + r)^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families.finite_flow import FiniteFlow, centred_layers, initial_flow_params, split_flow_params

__all__ = ["RadialFamily", "RadialLayer"]


@dataclass(frozen=True)
class RadialLayer:
    """F(z) = z + beta (z - z_ref) / (alpha + |z - z_ref|), parameters z_ref (B, D), alpha > 0 and
    gamma = alpha + beta > 0 (B,)."""

    z_ref: Tensor
    alpha: Tensor
    gamma: Tensor

    @property
    def beta(self) -> Tensor:
        return self.gamma - self.alpha

    @classmethod
    def from_raw(cls, raw: Tensor) -> RadialLayer:
        """The layer of raw parameters (z_ref, a, g): (B, D + 2), any values."""
        z_ref, a, g = raw.split([raw.shape[-1] - 2, 1, 1], dim=-1)
        return cls(z_ref, F.softplus(a).squeeze(-1), F.softplus(g).squeeze(-1))

    def centred(self, c: Tensor) -> RadialLayer:
        """c + F(z - c): the reference point c + z_ref."""
        return RadialLayer(c + self.z_ref, self.alpha, self.gamma)

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        d = z - self.z_ref
        r = torch.linalg.vector_norm(d, dim=-1)
        alpha, gamma, dim = self.alpha, self.gamma, z.shape[-1]
        log_det = (dim - 1) * (torch.log(gamma + r) - torch.log(alpha + r)) + (
            torch.log(alpha * gamma + (2 * alpha + r) * r) - 2 * torch.log(alpha + r)
        )
        return z + (self.beta / (alpha + r)).unsqueeze(-1) * d, log_det

    def jacobian(self, z: Tensor) -> Tensor:
        """(1 + beta h) I + beta h'(r) d d^T / r, d = z - z_ref."""
        d = z - self.z_ref
        r = torch.linalg.vector_norm(d, dim=-1)
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        diagonal = (1 + self.beta / (self.alpha + r))[..., None, None]
        # beta h'(r) / r = -beta / ((alpha + r)^2 r): d d^T / r -> 0 as r -> 0
        outer = (-self.beta / ((self.alpha + r) ** 2 * r.clamp_min(torch.finfo(z.dtype).tiny)))[..., None, None]
        return diagonal * eye + outer * d.unsqueeze(-1) * d.unsqueeze(-2)

    def inverse(self, y: Tensor) -> Tensor:
        """Closed form: rho = |y - z_ref| = r (gamma + r) / (alpha + r), so r is the positive root
        of r^2 + (gamma - rho) r - alpha rho = 0, and z - z_ref = (y - z_ref) (alpha + r) / (gamma + r)."""
        e = y - self.z_ref
        rho = torch.linalg.vector_norm(e, dim=-1)
        k = self.gamma - rho
        root = torch.sqrt(k * k + 4 * self.alpha * rho)
        # the form without cancellation on each side of k = 0
        r = torch.where(k > 0, 2 * self.alpha * rho / (root + k).clamp_min(torch.finfo(y.dtype).tiny), (root - k) / 2)
        return self.z_ref + e * ((self.alpha + r) / (self.gamma + r)).unsqueeze(-1)


class RadialFamily:
    """q = K radial flows of N(m, diag(s^2)); lambda = (m, softplus^-1(s), then (z_ref, a, g)
    for each flow), P = 2D + K(D + 2). ``centred``: each reference point c_k + z_ref, about the
    image c_k of the base mean (:func:`~avi.families.finite_flow.centred_layers`)."""

    name = "radial"

    def __init__(self, latent_dim: int, flows: int = 10, centred: bool = False) -> None:
        if flows < 1:
            raise ConfigError(f"a radial flow needs at least one layer, got {flows}")
        self.latent_dim, self.flows, self.centred = latent_dim, flows, centred
        self.param_size = 2 * latent_dim + flows * (latent_dim + 2)

    def __call__(self, params: Tensor) -> Distribution:
        loc, scale, raw = split_flow_params(params, self.latent_dim, self.flows)
        layers = [RadialLayer.from_raw(r) for r in raw.unbind(-2)]
        return FiniteFlow(loc, scale, centred_layers(loc, layers) if self.centred else layers)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """N(0, scale^2 I) through small fixed flows, for n points: (n, P)."""
        return initial_flow_params(n, self.latent_dim, self.param_size - 2 * self.latent_dim, scale)
