"""Planar, radial and Sylvester flows: each layer's Jacobian and log-determinant against
autograd (near the invertibility boundary too), the constraints for any raw output, log q
against the change of variables and a grid integral, the gradient of log q at a fixed z, and
training through an encoder and a per-point table. Float64 throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.autograd.functional import jacobian
from torch.distributions import Normal

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.families import FiniteFlow, PlanarFamily, RadialFamily, SylvesterFamily, make_family
from avi.families.planar import PlanarLayer
from avi.families.radial import RadialLayer
from avi.inference import LocalPosterior, fit
from avi.models import LinearGaussian
from avi.objectives import ELBO
from avi.objectives.bounds import log_weights

Family = PlanarFamily | RadialFamily | SylvesterFamily

MAKERS: dict[str, Callable[..., Family]] = {
    "planar": lambda d, k=3: PlanarFamily(d, flows=k),
    "radial": lambda d, k=3: RadialFamily(d, flows=k),
    "sylvester-householder": lambda d, k=3: SylvesterFamily(d, flows=k, reflections=2),
    "sylvester-triangular": lambda d, k=3: SylvesterFamily(d, flows=k, variant="triangular"),
}
NAMES = list(MAKERS)  # uncentred
#: the same families with centred layers (:func:`avi.families.finite_flow.centred_layers`)
CENTRED: dict[str, Callable[..., Family]] = {
    "planar-centred": lambda d, k=3: PlanarFamily(d, flows=k, centred=True),
    "radial-centred": lambda d, k=3: RadialFamily(d, flows=k, centred=True),
    "sylvester-householder-centred": lambda d, k=3: SylvesterFamily(d, flows=k, reflections=2, centred=True),
    "sylvester-triangular-centred": lambda d, k=3: SylvesterFamily(d, flows=k, variant="triangular", centred=True),
}
MAKERS |= CENTRED


def _params(family: Family, n: int, spread: float) -> Tensor:
    """lambda for n points: base mean N(0, 1), base scale about 0.7, raw flow parameters N(0, spread^2)."""
    d = family.latent_dim
    params = torch.randn(n, family.param_size, dtype=torch.float64)
    params[:, d : 2 * d] = 0.0
    params[:, 2 * d :] *= spread
    return params


def _to_boundary(family: Family, params: Tensor) -> Tensor:
    """Every flow pushed to the edge of its constraint, its determinant near 0 at the probe
    point of :func:`_probe`: planar u = -(14 / |w|^2) w (so u_hat^T w = softplus(-14) - 1) and
    b = 0; radial gamma = softplus(-30) (beta = -alpha + 1e-13); Sylvester R_ii R~_ii =
    tanh(4) tanh(-4) = -(1 - 2.7e-3) and b = 0 (closer, autograd's det loses its sign to rounding)."""
    d, params = family.latent_dim, params.clone()
    flows = params[:, 2 * d :].unflatten(-1, (family.flows, -1))  # a view: written through
    if isinstance(family, PlanarFamily):
        w = flows[..., d : 2 * d]
        flows[..., :d] = -14 * w / (w * w).sum(-1, keepdim=True)
        flows[..., 2 * d] = 0.0
    elif isinstance(family, RadialFamily):
        flows[..., d + 1] = -30.0
    else:
        off = d * (d - 1)
        flows[..., off : off + 3 * d] = torch.cat([torch.full((d,), 4.0), torch.full((d,), -4.0), torch.zeros(d)])
    return params


def _probe(layer: object, d: int) -> Tensor:
    """Where a layer at its boundary is nearly singular: z = 0 (pre-activation 0 when b = 0),
    or next to a radial flow's centre (r = 1e-3)."""
    z_ref = getattr(layer, "z_ref", None)
    if z_ref is None:
        return torch.zeros(1, d, dtype=torch.float64)
    return z_ref + 1e-3 / math.sqrt(d)


@pytest.mark.parametrize("draw", ["typical", "wide", "boundary"])
@pytest.mark.parametrize("name", NAMES)
def test_each_layer_matches_autograd(name: str, draw: str) -> None:
    # For every layer at several z: jacobian() equals autograd's dF/dz, the log-determinant
    # equals log |det| of it (and det > 0), and inverse() undoes the layer. At the boundary the
    # probe point has det about e^-14 (planar), 1e-13 (radial) or (2.7e-3)^3 (Sylvester),
    # which must still match: to 1e-6 there, autograd's LU determinant being good to about
    # eps cond(J) ~ 1e-16 x 1e9 in relative terms (measured 2e-7 for Householder), else to 1e-8.
    d = 3
    family = MAKERS[name](d)
    params = _params(family, 1, 4.0 if draw == "wide" else 1.0)
    if draw == "boundary":
        params = _to_boundary(family, params)
    q = family(params)
    assert isinstance(q, FiniteFlow)
    for layer in q.layers:
        points = [torch.randn(1, d, dtype=torch.float64) * s for s in (0.5, 2.0)] + [_probe(layer, d)]
        for z in points:
            auto = jacobian(lambda v, layer=layer: layer(v)[0], z)[0, :, 0, :]
            sign, log_abs_det = torch.linalg.slogdet(auto)
            y, log_det = layer(z)
            assert sign == 1
            torch.testing.assert_close(layer.jacobian(z)[0], auto, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(log_det[0], log_abs_det, rtol=0, atol=1e-6 if draw == "boundary" else 1e-8)
            torch.testing.assert_close(layer.inverse(y), z, rtol=1e-9, atol=1e-9)
        if draw == "boundary":
            assert layer(_probe(layer, d))[1].item() < -8


@pytest.mark.parametrize("name", NAMES + list(CENTRED))
def test_log_q_is_the_change_of_variables(name: str) -> None:
    # log q(F(z0)) = log N(z0; m, s^2) - log |det dF/dz0| with the Jacobian of the whole flow by
    # autograd; the sample's own log q, and log_prob at the sample and at a copy (inverted).
    d = 3
    family = MAKERS[name](d)
    q = family(_params(family, 4, 1.0))
    z0 = q.loc + q.scale * torch.randn(4, d, dtype=torch.float64)
    z, log_q = q.push(z0)
    jac = jacobian(lambda v: q.push(v)[0], z0)
    idx = torch.arange(4)
    expected = Normal(q.loc, q.scale).log_prob(z0).sum(-1) - torch.linalg.slogdet(jac[idx, :, idx, :]).logabsdet
    torch.testing.assert_close(log_q, expected, rtol=1e-10, atol=1e-10)
    assert (log_q - Normal(q.loc, q.scale).log_prob(z0).sum(-1)).abs().max() > 0.1  # a real change of density

    z, log_q = q.rsample_and_log_prob((5,))
    assert z.shape == (5, 4, d) and log_q.shape == (5, 4)
    torch.testing.assert_close(q.log_prob(z), log_q, rtol=0, atol=0)
    torch.testing.assert_close(q.log_prob(z.clone()), log_q, rtol=1e-10, atol=1e-10)
    sample = q.sample((2,))
    torch.testing.assert_close(q.log_prob(sample.clone()), q.log_prob(sample), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES + list(CENTRED))
def test_density_integrates_to_one(name: str) -> None:
    # The trapezoid rule on a 321 x 321 grid over [-8, 8]^2 (spacing 0.05) of q(z) = exp(log_prob)
    # at z on the grid (log_prob inverts the flow): for a smooth density that vanishes at the
    # edges the rule is accurate to rounding (measured |mass - 1| < 1e-15 for planar and
    # Sylvester), less so at the radial flow's kink at z_ref (9e-9). Centred, the radial kink
    # sits in the mass, where this grid misses by 1.4e-6 (641 points: 9e-8, 1281: 4e-9, the
    # rule converging), so radial flows get 641 points a side. A wrong log-determinant, off by
    # any constant or sign, misses 1e-6 by far.
    family = MAKERS[name](2)
    params = _params(family, 1, 0.5)
    params[:, :2] = params[:, :2].clamp(-2, 2)
    q = family(params)
    with torch.no_grad():
        assert q.sample((2000,)).abs().max() < 6  # the mass is well inside the grid
        n = 641 if isinstance(family, RadialFamily) else 321
        axis = torch.linspace(-8, 8, n, dtype=torch.float64)
        grid = torch.cartesian_prod(axis, axis).unsqueeze(1)  # (G, 1, 2)
        density = q.log_prob(grid).exp().reshape(n, n)
    mass = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis).item()
    assert abs(mass - 1) < 1e-6, mass


@pytest.mark.parametrize("name", NAMES + list(CENTRED))
def test_invertible_for_any_raw_output(name: str) -> None:
    # Raw outputs of spread 30 (tanh and softplus saturate): the constraint holds and each map
    # is monotone along the direction that could fold it, so it stays a bijection.
    d = 3
    family = MAKERS[name](d)
    q = family(_params(family, 64, 30.0))
    assert isinstance(q, FiniteFlow)
    t = torch.linspace(-20, 20, 401, dtype=torch.float64)
    z = torch.randn(64, d, dtype=torch.float64)
    for layer in q.layers:
        if isinstance(layer, PlanarLayer):
            slope, size = (layer.u_hat * layer.w).sum(-1), layer.u_hat.norm(dim=-1) * layer.w.norm(dim=-1)
            assert (slope + 1 >= -1e-12 * size).all()  # >= -1 to rounding
            direction = layer.w / layer.w.norm(dim=-1, keepdim=True)
            along = (layer(z + t[:, None, None] * direction)[0] * layer.w).sum(-1)  # w^T F along w: (T, 64)
        elif isinstance(layer, RadialLayer):
            assert (layer.beta >= -layer.alpha).all()
            direction = z / z.norm(dim=-1, keepdim=True)
            radius = t[t > 0][:, None, None]
            along = (layer(layer.z_ref + radius * direction)[0] - layer.z_ref).norm(dim=-1)
        else:
            eye = torch.eye(d, dtype=torch.float64)
            torch.testing.assert_close(layer.q.transpose(-1, -2) @ layer.q, eye.expand_as(layer.q), rtol=0, atol=1e-12)
            assert torch.equal(layer.r, layer.r.triu()) and torch.equal(layer.r_tilde, layer.r_tilde.triu())
            product = layer.r.diagonal(dim1=-2, dim2=-1) * layer.r_tilde.diagonal(dim1=-2, dim2=-1)
            assert (product >= -1).all()
            # in v = Q^T z the map is triangular: (Q^T F)_i depends on v_j, j >= i, and must
            # increase in v_i, for every i
            q_t = layer.q.transpose(-1, -2)
            along = torch.cat(
                [
                    (q_t @ layer(z + t[:, None, None] * layer.q[..., i])[0].unsqueeze(-1))[..., i, 0]
                    for i in range(d)
                ],
                dim=-1,
            )
        assert (along.diff(dim=0) > 0).all()
        assert not layer(z)[1].isnan().any()


@pytest.mark.parametrize("name", NAMES + list(CENTRED))
def test_gradient_of_log_q_at_a_fixed_z(name: str) -> None:
    # d log q(z) / d(lambda, z) at a z that is not a sample (log_prob inverts the flow) against
    # finite differences (gradcheck, float64); at a sample of q (the remembered base point) the
    # gradient in lambda is the same, as the score-function estimators need.
    family = MAKERS[name](2, 2)
    params = _params(family, 1, 1.0).requires_grad_(True)
    z = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, v: family(p).log_prob(v), (params, z))

    q = family(params)
    sample = q.sample((3,))
    (at_sample,) = torch.autograd.grad(q.log_prob(sample).sum(), params, retain_graph=True)
    (inverted,) = torch.autograd.grad(q.log_prob(sample.clone()).sum(), params)
    torch.testing.assert_close(at_sample, inverted, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("estimator", ["reparam", "score"])
@pytest.mark.parametrize("name", NAMES + list(CENTRED))
def test_gradients_reach_the_encoder_and_the_table(name: str, estimator: str, ppca: LinearGaussian) -> None:
    # Through an encoder (amortized: every flow parameter is an encoder output) and a per-point
    # table, the ELBO's gradient reaches every encoder weight and every column of lambda.
    family = MAKERS[name](ppca.latent_dim)
    x = ppca.sample(8)[0]
    objective = ELBO(num_samples=4, estimator=estimator, analytic_kl=estimator == "reparam")
    encoder = mlp_encoder(ppca.data_dim, [16], family.param_size).double()
    amortized = AmortizedPosterior(encoder, family)
    objective(ppca, amortized(x), x).value.sum().backward()
    for p in encoder.parameters():
        assert p.grad is not None and p.grad.isfinite().all() and (p.grad != 0).any()
    assert (encoder[-1].weight.grad.abs().sum(-1) > 0).all()  # every output: every lambda column

    table = LocalPosterior(8, family).double()
    (group,) = table.param_groups()
    assert group.table
    index = torch.arange(8)
    objective(ppca, table(x, index), x).value.sum().backward()
    grad = table.table.grad.to_dense()
    assert grad.isfinite().all() and (grad.abs().sum(0) > 0).all()


def _offsets(family: Family) -> list[slice]:
    """Where each flow's offset sits in lambda: planar b, radial z_ref, Sylvester b."""
    d, size = family.latent_dim, (family.param_size - 2 * family.latent_dim) // family.flows
    if isinstance(family, PlanarFamily):
        start, width = 2 * d, 1
    elif isinstance(family, RadialFamily):
        start, width = 0, d
    else:
        start, width = d * (d - 1) + 2 * d, d
    return [slice(2 * d + k * size + start, 2 * d + k * size + start + width) for k in range(family.flows)]


@pytest.mark.parametrize("name", NAMES)
def test_a_centred_layer_is_the_layer_moved(name: str) -> None:
    # G = layer.centred(c) is z -> c + F(z - c) with F's log-determinant at z - c, for each
    # layer and a batch of centres; so a centred flow is a flow of the same kind (the same family).
    d = 3
    family = MAKERS[name](d)
    q = family(_params(family, 4, 1.0))
    z, c = torch.randn(5, 4, d, dtype=torch.float64), torch.randn(4, d, dtype=torch.float64)
    for layer in q.layers:
        moved, log_det = layer.centred(c)(z)
        expected, expected_log_det = layer(z - c)
        torch.testing.assert_close(moved, c + expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(log_det, expected_log_det, rtol=1e-12, atol=1e-12)
        assert (moved - layer(z)[0]).abs().max() > 1e-3  # moving it changes the map


@pytest.mark.parametrize("name", NAMES)
def test_centred_layers_sit_at_the_image_of_the_base_mean(name: str) -> None:
    # With every offset of lambda 0 (planar b, radial z_ref, Sylvester b), each centred layer
    # leaves the image of the base mean where it is (tanh(0) = 0; radial d = 0), so the whole
    # flow maps m to m; the uncentred flow of the same lambda moves it. Centring changes only
    # the parametrisation: the centred flow of lambda equals the uncentred flow whose offsets
    # are moved by each layer's centre c_k.
    d = 3
    plain, centred = MAKERS[name](d), CENTRED[f"{name}-centred"](d)
    params = _params(plain, 4, 1.0)
    for where in _offsets(plain):
        params[:, where] = 0.0
    q, q_centred = plain(params), centred(params)
    torch.testing.assert_close(q_centred.push(q.loc)[0], q.loc, rtol=0, atol=1e-12)
    assert (q.push(q.loc)[0] - q.loc).abs().max() > 1e-3
    z0 = q.loc + q.scale * torch.randn(6, 4, d, dtype=torch.float64)
    centre, z, log_q = q.loc, z0, q._base_log_prob(z0)
    for layer in q.layers:
        moved = layer.centred(centre)
        z, log_det = moved(z)
        log_q, centre = log_q - log_det, moved(centre)[0]
    expected_z, expected_log_q = q_centred.push(z0)
    torch.testing.assert_close(z, expected_z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_q, expected_log_q, rtol=1e-12, atol=1e-12)


def test_training_improves_the_elbo(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # PPCA with the model fixed: a planar flow through an encoder and a Householder Sylvester
    # flow per point, 30 epochs each. ELBOs from 200 samples per point, the mean over 50 points
    # (its Monte Carlo SE about 0.02): measured from -40 to -8.7 (encoder) and from -42 to -10.2
    # (table), below log p(x) = -7.65. We require a rise of 10 nats and a bound on log p(x).
    x = ppca_x
    log_px = ppca.exact_log_marginal(x).mean().item()

    def elbo(posterior: torch.nn.Module) -> float:
        with torch.no_grad():
            log_lik, log_prior, log_q = log_weights(ppca, posterior(x, torch.arange(len(x))), x, 200)
        return (log_lik + log_prior - log_q).mean().item()

    planar = PlanarFamily(2, flows=4)
    amortized = AmortizedPosterior(mlp_encoder(5, [32], planar.param_size), planar).double()
    local = LocalPosterior(len(x), SylvesterFamily(2, flows=2, reflections=2)).double()
    for posterior, lr in ((amortized, 1e-2), (local, 0.05)):
        before = elbo(posterior)
        fit(ppca, posterior, Dataset(x), epochs=30, batch_size=25, lr=lr, local_lr=lr,
            objective=ELBO(analytic_kl=False), train_model=False)  # fmt: skip
        after = elbo(posterior)
        assert after > before + 10, (before, after)
        assert after < log_px + 0.1, (after, log_px)


def test_make_family_and_bad_options() -> None:
    assert isinstance(make_family("planar", 4), PlanarFamily)
    assert isinstance(make_family("radial", 4), RadialFamily)
    assert isinstance(make_family("sylvester", 4), SylvesterFamily)
    assert SylvesterFamily(4, flows=2, reflections=3).param_size == 8 + 2 * (12 + 12 + 12)
    assert SylvesterFamily(4, flows=2, variant="triangular").param_size == 8 + 2 * (12 + 12)
    assert PlanarFamily(4, flows=2).initial_params(3).shape == (3, 8 + 2 * 9)
    with pytest.raises(ConfigError, match="unknown Sylvester flow"):
        SylvesterFamily(2, variant="orthogonal")
    with pytest.raises(ConfigError, match="at least one layer"):
        PlanarFamily(2, flows=0)
    with pytest.raises(ConfigError, match="at least one layer"):
        RadialFamily(2, flows=0)
