"""Finite flows (Rezende and Mohamed 2015, section 3.1): q(z) is a diagonal Gaussian pushed
through K invertible maps whose parameters are all part of lambda.

    z_0 ~ N(m, diag(s^2)),   z_K = F_K o ... o F_1(z_0),
    log q(z_K) = log N(z_0; m, s^2) - sum_k log |det dF_k/dz (z_{k-1})|.

An encoder that outputs lambda amortizes every flow parameter, as in the papers; a per-point
table of lambda gives per-datapoint flows. The layers (planar, radial, Sylvester) have no
closed-form inverse, but each inverts by scalar monotone root-finding, so ``log_prob`` works at
any z: at the flow's own samples from the z_0 it remembers, elsewhere through the layers'
``inverse``. Its gradient is exact to first order by the implicit function theorem (below).

Centred flows (:func:`centred_layers`) move each layer to c_k, the image of the base mean under
the layers before it: G_k(z) = c_k + F_k(z - c_k), c_1 = m, c_(k+1) = G_k(c_k); so a planar
hyperplane is w^T (z - c_k) + b = 0, a radial reference point c_k + z_ref, a Sylvester offset
R~ Q^T (z - c_k) + b. G_k is a layer of the same kind, so the family is the same (every centred
lambda has an uncentred twin giving the same q); what changes is where raw parameters near 0
put a layer (inside q's mass), and so how it trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Size, Tensor
from torch.distributions import Distribution, constraints

from avi.families.gaussian import inverse_softplus

__all__ = [
    "FiniteFlow",
    "Layer",
    "centred_layers",
    "initial_flow_params",
    "matvec",
    "solve_increasing",
    "split_flow_params",
]

#: spread of the fixed draw that starts a per-point table's flow parameters (off the saddle
#: points where a layer is the identity and its parameters get no gradient)
INITIAL_SPREAD = 0.1

#: iterations of the safeguarded Newton search in :func:`solve_increasing`
MAX_NEWTON_STEPS = 100


class Layer(Protocol):
    """One map F: R^D -> R^D with parameters of batch shape (B,), applied to z: (..., B, D)."""

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """F(z) (..., B, D) and log |det dF/dz| (..., B)."""
        ...

    def jacobian(self, z: Tensor) -> Tensor:
        """dF/dz at z: (..., B, D, D)."""
        ...

    def inverse(self, y: Tensor) -> Tensor:
        """F^-1(y): (..., B, D), to the solver's precision (no gradient)."""
        ...

    def centred(self, c: Tensor) -> Layer:
        """The layer moved by c (B, D): G(z) = c + F(z - c), a layer of the same kind
        (:func:`centred_layers`)."""
        ...


def matvec(matrix: Tensor, v: Tensor) -> Tensor:
    """matrix @ v over the last axes: (..., D, M) x (..., M) -> (..., D), batch axes broadcast."""
    return (matrix @ v.unsqueeze(-1)).squeeze(-1)


def solve_increasing(p: Tensor, q: Tensor, c: Tensor, t: Tensor) -> Tensor:
    """x with x + p tanh(q x + c) = t, elementwise, for p q > -1 (the left side then increases
    in x, with slope 1 + p q (1 - tanh^2) > 0, and the root lies in [t - |p|, t + |p|]).

    Newton steps kept inside the shrinking bracket (bisection where a step would leave it), to
    a few ulps of x; no gradient.
    """
    with torch.no_grad():
        lo, hi = t - p.abs(), t + p.abs()
        x = t.clone()
        tol = 4 * torch.finfo(t.dtype).eps
        for _ in range(MAX_NEWTON_STEPS):
            th = torch.tanh(q * x + c)
            g = x + p * th - t
            lo, hi = torch.where(g < 0, x, lo), torch.where(g > 0, x, hi)
            step = g / (1 + p * q * (1 - th * th))
            newton = x - step
            x_next = torch.where((newton >= lo) & (newton <= hi), newton, (lo + hi) / 2)
            done = bool(((x_next - x).abs() <= tol * (1 + x.abs())).all())
            x = x_next
            if done:
                break
        return x


def centred_layers(loc: Tensor, layers: Sequence[Layer]) -> list[Layer]:
    """Each layer centred at c_k, the image of the base mean m (B, D) under the (centred) layers
    before it: c_1 = m, c_(k+1) = G_k(c_k)."""
    centre, centred = loc, []
    for layer in layers:
        layer = layer.centred(centre)
        centred.append(layer)
        centre = layer(centre)[0]
    return centred


def split_flow_params(params: Tensor, latent_dim: int, flows: int) -> tuple[Tensor, Tensor, Tensor]:
    """lambda (..., P) -> base mean m (..., D), base scale s = softplus(raw) (..., D), and the
    flows' raw parameters (..., K, P_flow), P = 2D + K P_flow."""
    loc, raw_scale, rest = params.split([latent_dim, latent_dim, params.shape[-1] - 2 * latent_dim], dim=-1)
    return loc, F.softplus(raw_scale), rest.unflatten(-1, (flows, -1))


def initial_flow_params(n: int, latent_dim: int, flow_size: int, scale: float) -> Tensor:
    """lambda for n points: base N(0, scale^2 I) and ``flow_size`` raw flow parameters from one
    fixed draw N(0, INITIAL_SPREAD^2), the same for every point and every call: (n, P)."""
    draw = torch.randn(flow_size, generator=torch.Generator().manual_seed(0)) * INITIAL_SPREAD
    raw = inverse_softplus(torch.tensor(scale))
    row = torch.cat([torch.zeros(latent_dim), raw.expand(latent_dim), draw])
    return row.expand(n, -1).clone()


class FiniteFlow(Distribution):
    """q(z) = (F_K o ... o F_1)_# N(m, diag(s^2)): batch shape m.shape[:-1], event shape (D,).

    ``rsample_and_log_prob`` draws z with log q(z) in one pass. ``log_prob(z)`` is exact at any
    z: the base point z_0 = F^-1(z) is the one remembered for the flow's latest sample (the very
    tensor ``sample``/``rsample`` returned) or else found by the layers' ``inverse``. Where
    gradients are on, z_0 then becomes z_0 - J^-1 (F(z_0) - z), J = dF/dz_0 held fixed: the same
    value, with the first derivatives in lambda and in z of z_0(lambda, z) = F_lambda^-1(z)
    (implicit function theorem), so score-function estimators get the right gradient.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, layers: Sequence[Layer]) -> None:
        self.loc, self.scale, self.layers = loc, scale, tuple(layers)
        self._last: tuple[Tensor, Tensor] | None = None  # (latest sample z, its z_0)
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _base_log_prob(self, z0: Tensor) -> Tensor:
        """log N(z_0; m, s^2), (..., B)."""
        std = (z0 - self.loc) / self.scale
        return (-0.5 * std * std - self.scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def push(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """z = F(z_0) and log q(z), for base points z_0: (..., B, D) -> (..., B, D), (..., B)."""
        z, log_q = z0, self._base_log_prob(z0)
        for layer in self.layers:
            z, log_det = layer(z)
            log_q = log_q - log_det
        return z, log_q

    def rsample_and_log_prob(self, sample_shape: Size | Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        """z ~ q by reparameterisation, (*sample_shape, B, D), and log q(z), (*sample_shape, B)."""
        eps = torch.randn(self._extended_shape(Size(sample_shape)), dtype=self.loc.dtype, device=self.loc.device)
        z0 = self.loc + self.scale * eps
        z, log_q = self.push(z0)
        self._last = (z, z0.detach())
        return z, log_q

    def rsample(self, sample_shape: Size | Sequence[int] = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def _base_point(self, value: Tensor) -> Tensor:
        """F^-1(value), detached: remembered for the latest sample, else by inversion."""
        if self._last is not None and value is self._last[0]:
            return self._last[1]
        with torch.no_grad():
            z0 = value.detach()
            for layer in reversed(self.layers):
                z0 = layer.inverse(z0)
        return z0

    def _jacobian(self, z0: Tensor) -> Tensor:
        """dF/dz_0 at z_0, (..., B, D, D), no gradient."""
        with torch.no_grad():
            z, jac = z0, torch.eye(z0.shape[-1], dtype=z0.dtype, device=z0.device)
            for layer in self.layers:
                jac = layer.jacobian(z) @ jac
                z = layer(z)[0]
        return jac

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(value), (..., B) for value (..., B, D)."""
        z0 = self._base_point(value)
        if torch.is_grad_enabled():
            residual = self.push(z0)[0] - value  # zero in value, its derivatives those of F
            z0 = z0 - torch.linalg.solve(self._jacobian(z0), residual.unsqueeze(-1)).squeeze(-1)
        return self.push(z0)[1]
