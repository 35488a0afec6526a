"""Planar flows (Rezende and Mohamed 2015): F(z) = z + u_hat tanh(w^T z + b).

log |det dF/dz| = log |1 + u_hat^T psi(z)|, psi = (1 - tanh^2(w^T z + b)) w. Invertible when
u_hat^T w >= -1 (their appendix A.1): u_hat = u + (m(w^T u) - w^T u) w / |w|^2 with
m(x) = -1 + softplus(x) > -1, for any raw (u, w, b).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families.finite_flow import (
    FiniteFlow,
    centred_layers,
    initial_flow_params,
    solve_increasing,
    split_flow_params,
)

__all__ = ["PlanarFamily", "PlanarLayer"]


@dataclass(frozen=True)
class PlanarLayer:
    """F(z) = z + u_hat tanh(w^T z + b), parameters u_hat, w (B, D), b (B,), and
    ``slope_raw`` = w^T u, with u_hat^T w = softplus(w^T u) - 1 (the constraint)."""

    u_hat: Tensor
    w: Tensor
    b: Tensor
    slope_raw: Tensor

    @classmethod
    def from_raw(cls, raw: Tensor) -> PlanarLayer:
        """The layer of raw parameters (u, w, b): (B, 2D + 1), any values."""
        dim = (raw.shape[-1] - 1) // 2
        u, w, b = raw.split([dim, dim, 1], dim=-1)
        wu = (w * u).sum(-1, keepdim=True)
        w_sq = (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(raw.dtype).tiny)
        u_hat = u + (F.softplus(wu) - 1 - wu) * w / w_sq
        return cls(u_hat, w, b.squeeze(-1), wu.squeeze(-1))

    def _pre(self, z: Tensor) -> Tensor:
        """w^T z + b: (..., B)."""
        return (self.w * z).sum(-1) + self.b

    def centred(self, c: Tensor) -> PlanarLayer:
        """c + F(z - c): the offset b - w^T c."""
        return PlanarLayer(self.u_hat, self.w, self.b - (self.w * c).sum(-1), self.slope_raw)

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        th = torch.tanh(self._pre(z))
        # 1 + u_hat^T psi = 1 + (1 - th^2)(softplus(w^T u) - 1) = th^2 + (1 - th^2) softplus(w^T u) > 0
        log_det = torch.log(th * th + (1 - th * th) * F.softplus(self.slope_raw))
        return z + self.u_hat * th.unsqueeze(-1), log_det

    def jacobian(self, z: Tensor) -> Tensor:
        """I + u_hat psi^T."""
        psi = (1 - torch.tanh(self._pre(z)) ** 2).unsqueeze(-1) * self.w
        return torch.eye(z.shape[-1], dtype=z.dtype, device=z.device) + self.u_hat.unsqueeze(-1) * psi.unsqueeze(-2)

    def inverse(self, y: Tensor) -> Tensor:
        """a = w^T z + b solves a + (u_hat^T w) tanh(a) = w^T y + b; then z = y - u_hat tanh(a)."""
        slope = F.softplus(self.slope_raw) - 1
        a = solve_increasing(slope, torch.ones_like(slope), torch.zeros_like(slope), self._pre(y))
        return y - self.u_hat * torch.tanh(a).unsqueeze(-1)


class PlanarFamily:
    """q = K planar flows of N(m, diag(s^2)); lambda = (m, softplus^-1(s), then (u, w, b) for
    each flow), P = 2D + K(2D + 1). Rezende and Mohamed (2015) use K = 10 to 80 on MNIST.
    ``centred``: each hyperplane w^T (z - c_k) + b = 0 about the image c_k of the base mean
    (:func:`~avi.families.finite_flow.centred_layers`)."""

    name = "planar"

    def __init__(self, latent_dim: int, flows: int = 10, centred: bool = False) -> None:
        if flows < 1:
            raise ConfigError(f"a planar flow needs at least one layer, got {flows}")
        self.latent_dim, self.flows, self.centred = latent_dim, flows, centred
        self.param_size = 2 * latent_dim + flows * (2 * latent_dim + 1)

    def __call__(self, params: Tensor) -> Distribution:
        loc, scale, raw = split_flow_params(params, self.latent_dim, self.flows)
        layers = [PlanarLayer.from_raw(r) for r in raw.unbind(-2)]
        return FiniteFlow(loc, scale, centred_layers(loc, layers) if self.centred else layers)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """N(0, scale^2 I) through small fixed flows, for n points: (n, P)."""
        return initial_flow_params(n, self.latent_dim, self.param_size - 2 * self.latent_dim, scale)
