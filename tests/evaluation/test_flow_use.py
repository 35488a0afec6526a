"""flow_layer_use: the share of q's spread each layer of a finite flow reshapes, against its
closed form for a linear layer, 0 for a shift and a saturated planar layer; None for other q."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.evaluation.flow_use import IN_USE, flow_layer_use
from avi.families import FiniteFlow, PlanarFamily, make_family


@dataclass(frozen=True)
class _Linear:
    """G(z) = z + z A^T: its displacement A z is linear in z."""

    a: Tensor

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z + z @ self.a.T, torch.zeros(z.shape[:-1], dtype=z.dtype)


@dataclass(frozen=True)
class _Shift:
    """G(z) = z + c: the same displacement for every draw."""

    c: Tensor

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z + self.c, torch.zeros(z.shape[:-1], dtype=z.dtype)


class _Fixed(nn.Module):
    """q(z | x_i) = the flow of N(loc_i, diag(scale_i^2)) through ``layers`` (whose parameters,
    if any, are those of all the points: one batch)."""

    def __init__(self, loc: Tensor, scale: Tensor, layers: list) -> None:
        super().__init__()
        self.loc, self.scale, self.layers = loc, scale, layers

    def forward(self, x: Tensor, index: Tensor | None = None) -> FiniteFlow:
        assert index is not None
        return FiniteFlow(self.loc[index], self.scale[index], self.layers)


def test_reshaping_is_the_covariance_ratio_of_the_displacement() -> None:
    # Layer 1, G(z) = z + A z on z ~ N(m_i, diag(s_i^2)): tr Cov(A z) = sum_jk A_jk^2 s_ik^2, so
    # reshaping = mean_i sum_jk A_jk^2 s_ik^2 / mean_i sum_k s_ik^2. From 200 points x 100 draws
    # each ratio has a relative standard error of about 0.01 (a sample variance of 100 Gaussian
    # draws is good to sqrt(2/99) = 0.14, averaged over 600 of them); we allow 5 of them. Layer
    # 2 (a shift) moves every draw by c: reshaping 0 to rounding. Layer 3 (A again) sees the
    # spread of layer 1's output, (I + A) z: its closed form follows the same way.
    generator = torch.Generator().manual_seed(0)
    n, d = 200, 3
    loc = torch.randn(n, d, dtype=torch.float64, generator=generator)
    scale = 0.2 + torch.rand(n, d, dtype=torch.float64, generator=generator)
    a = torch.tensor([[0.5, -0.3, 0.0], [0.2, 0.1, 0.4], [0.0, 0.3, -0.6]], dtype=torch.float64)
    shift = _Shift(torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64))
    posterior = _Fixed(loc, scale, [_Linear(a), shift, _Linear(a)])
    use = flow_layer_use(posterior, torch.zeros(n, 1), batch_size=64, generator=torch.Generator().manual_seed(1))
    assert use is not None and use.shape == (3,)
    var = scale**2  # (n, d)
    first = ((a**2) @ var.T).sum(0).mean() / var.sum(-1).mean()
    after = torch.eye(d, dtype=torch.float64) + a  # covariance of layer 1's output: (I + A) S (I + A)^T
    cov_in = torch.einsum("jk,ik,lk->ijl", after, var, after)  # (n, d, d)
    third = torch.einsum("jk,ikl,jl->i", a, cov_in, a).mean() / cov_in.diagonal(dim1=-2, dim2=-1).sum(-1).mean()
    assert abs(use[0] / first - 1) < 0.05, (use[0], first)
    assert abs(use[2] / third - 1) < 0.05, (use[2], third)
    assert use[1] < 1e-20


def test_a_saturated_planar_layer_is_not_in_use() -> None:
    # One planar layer on N(0, I) in 4 dimensions, u = 1, w = 0.5: with b = 0 tanh(w^T z) varies
    # over q's draws (reshaping about |u|^2 Var(tanh) / 4, order 0.1); with b = 60 it is 1 to
    # rounding for every draw (|w^T z| < 60 by 30 standard deviations), so G only shifts q.
    family = PlanarFamily(4, flows=1)
    params = torch.zeros(10, family.param_size, dtype=torch.float64)
    params[:, 4:8] = torch.log(torch.expm1(torch.tensor(1.0, dtype=torch.float64)))  # scale 1
    params[:, 8:12], params[:, 12:16] = 1.0, 0.5

    def use_at(b: float) -> float:
        params[:, 16] = b
        q = family(params)
        result = flow_layer_use(_Fixed(q.loc, q.scale, list(q.layers)), torch.zeros(10, 1),
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert result is not None
        return result.item()

    assert use_at(0.0) > 10 * IN_USE
    assert use_at(60.0) < 1e-12


def test_other_posteriors_have_no_flow_layers() -> None:
    family = make_family("mean-field", 2)
    posterior = AmortizedPosterior(mlp_encoder(3, [8], family.param_size), family)
    assert flow_layer_use(posterior, torch.randn(5, 3)) is None
