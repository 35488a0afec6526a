"""Sylvester flows (van den Berg, Hasenclever, Tomczak and Welling 2018):
F(z) = z + Q R tanh(R~ Q^T z + b), Q orthogonal (D, D), R and R~ upper triangular.

By Sylvester's determinant identity, log |det dF/dz| = sum_i log(1 + tanh'(pre_i) R_ii R~_ii),
pre = R~ Q^T z + b; F is invertible when R_ii R~_ii > -1, which tanh on both diagonals gives for
any raw output (their section 3). Variants: ``householder`` (Q the product of H Householder
reflections I - 2 v v^T / |v|^2, each flow its own v) and ``triangular`` (Q the identity and the
order-reversing permutation in turn). Each flow has D(D - 1) raw off-diagonal entries, the
strictly upper parts of R and R~ (the authors' code reads both from one (D, D) matrix).

In v = Q^T z the triangular structure makes F^-1 a back substitution: the last coordinate of v
first, each a scalar monotone equation (an inverse autoregressive flow's D passes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families.finite_flow import (
    FiniteFlow,
    centred_layers,
    initial_flow_params,
    matvec,
    solve_increasing,
    split_flow_params,
)

__all__ = ["SYLVESTER_VARIANTS", "SylvesterFamily", "SylvesterLayer", "householder_product"]

SYLVESTER_VARIANTS = ("householder", "triangular")


def householder_product(v: Tensor) -> Tensor:
    """Q = prod_h (I - 2 v_h v_h^T / |v_h|^2) for reflections v: (..., H, D) -> (..., D, D)."""
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    q = torch.eye(v.shape[-1], dtype=v.dtype, device=v.device).expand(*v.shape[:-2], -1, -1)
    for h in v.unbind(-2):
        q = q - 2 * matvec(q, h).unsqueeze(-1) * h.unsqueeze(-2)
    return q


def _triangular(upper: Tensor, raw_diag: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """The upper-triangular matrix with strictly upper entries ``upper`` (at rows, cols) and
    diagonal tanh(raw_diag) in (-1, 1): (B, D, D)."""
    matrix = torch.diag_embed(torch.tanh(raw_diag))
    matrix[..., rows, cols] = upper
    return matrix


@dataclass(frozen=True)
class SylvesterLayer:
    """F(z) = z + Q R tanh(R~ Q^T z + b): q (B or none, D, D) orthogonal, r and r_tilde (B, D, D)
    upper triangular with |diagonal| < 1, b (B, D)."""

    q: Tensor
    r: Tensor
    r_tilde: Tensor
    b: Tensor

    @classmethod
    def from_raw(cls, raw: Tensor, q: Tensor) -> SylvesterLayer:
        """The layer of raw parameters (R's and R~'s strictly upper entries row by row, their raw
        diagonals, b): (B, D^2 + 2D), any values."""
        dim = q.shape[-1]
        rows, cols = torch.triu_indices(dim, dim, 1, device=raw.device)
        upper, upper_tilde, diag, diag_tilde, b = raw.split([len(rows), len(rows), dim, dim, dim], dim=-1)
        return cls(q, _triangular(upper, diag, rows, cols), _triangular(upper_tilde, diag_tilde, rows, cols), b)

    def centred(self, c: Tensor) -> SylvesterLayer:
        """c + F(z - c): the offset b - R~ Q^T c."""
        shift = matvec(self.r_tilde, matvec(self.q.transpose(-1, -2), c))
        return SylvesterLayer(self.q, self.r, self.r_tilde, self.b - shift)

    def _pre(self, z: Tensor) -> Tensor:
        """R~ Q^T z + b: (..., B, D)."""
        return matvec(self.r_tilde, matvec(self.q.transpose(-1, -2), z)) + self.b

    def _diagonal_product(self) -> Tensor:
        """R_ii R~_ii in (-1, 1): (B, D)."""
        return self.r.diagonal(dim1=-2, dim2=-1) * self.r_tilde.diagonal(dim1=-2, dim2=-1)

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        th = torch.tanh(self._pre(z))
        log_det = torch.log1p((1 - th * th) * self._diagonal_product()).sum(-1)
        return z + matvec(self.q, matvec(self.r, th)), log_det

    def jacobian(self, z: Tensor) -> Tensor:
        """I + Q R diag(tanh'(pre)) R~ Q^T."""
        slope = 1 - torch.tanh(self._pre(z)) ** 2
        inner = (self.r * slope.unsqueeze(-2)) @ self.r_tilde
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        return eye + self.q @ inner @ self.q.transpose(-1, -2)

    def inverse(self, y: Tensor) -> Tensor:
        """Back substitution in v = Q^T z: v_i + R_ii tanh(R~_ii v_i + c_i) = (Q^T y)_i -
        sum_{j > i} R_ij tanh(pre_j), with c_i = sum_{j > i} R~_ij v_j + b_i."""
        target = matvec(self.q.transpose(-1, -2), y)
        v, th = torch.zeros_like(target), torch.zeros_like(target)
        r, r_tilde = self.r, self.r_tilde
        for i in reversed(range(y.shape[-1])):
            c = (r_tilde[..., i, i + 1 :] * v[..., i + 1 :]).sum(-1) + self.b[..., i]
            t = target[..., i] - (r[..., i, i + 1 :] * th[..., i + 1 :]).sum(-1)
            r_ii, r_tilde_ii = r[..., i, i].expand_as(t), r_tilde[..., i, i].expand_as(t)
            v[..., i] = solve_increasing(r_ii, r_tilde_ii, c, t)
            th[..., i] = torch.tanh(r_tilde_ii * v[..., i] + c)
        return matvec(self.q, v)


class SylvesterFamily:
    """q = K Sylvester flows of N(m, diag(s^2)); lambda = (m, softplus^-1(s), then for each flow
    R's and R~'s strictly upper entries, their raw diagonals, b, and for ``householder`` H
    reflections), P = 2D + K(D^2 + 2D + H D) (H = 0 for ``triangular``). ``centred``: each
    offset R~ Q^T (z - c_k) + b, about the image c_k of the base mean
    (:func:`~avi.families.finite_flow.centred_layers`)."""

    name = "sylvester"

    def __init__(
        self, latent_dim: int, flows: int = 4, variant: str = "householder", reflections: int = 8, centred: bool = False
    ) -> None:
        if variant not in SYLVESTER_VARIANTS:
            raise ConfigError(f"unknown Sylvester flow {variant!r}; choose from {list(SYLVESTER_VARIANTS)}")
        if flows < 1 or reflections < 1:
            raise ConfigError(f"a Sylvester flow needs at least one layer and reflection, got {flows}, {reflections}")
        self.latent_dim, self.flows, self.variant, self.centred = latent_dim, flows, variant, centred
        self.reflections = reflections if variant == "householder" else 0
        self.param_size = 2 * latent_dim + flows * (latent_dim * latent_dim + (2 + self.reflections) * latent_dim)

    def _orthogonal(self, raw: Tensor, k: int) -> Tensor:
        """Q of flow k: from its reflections (householder), else I or the reversal in turn."""
        dim = self.latent_dim
        if self.variant == "householder":
            return householder_product(raw[..., -self.reflections * dim :].unflatten(-1, (self.reflections, dim)))
        eye = torch.eye(dim, dtype=raw.dtype, device=raw.device)
        return eye.flip(-1) if k % 2 else eye

    def __call__(self, params: Tensor) -> Distribution:
        loc, scale, raw = split_flow_params(params, self.latent_dim, self.flows)
        cut = self.latent_dim * (self.latent_dim + 2)
        layers = [SylvesterLayer.from_raw(r[..., :cut], self._orthogonal(r, k)) for k, r in enumerate(raw.unbind(-2))]
        return FiniteFlow(loc, scale, centred_layers(loc, layers) if self.centred else layers)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """N(0, scale^2 I) through small fixed flows, for n points: (n, P)."""
        return initial_flow_params(n, self.latent_dim, self.param_size - 2 * self.latent_dim, scale)
