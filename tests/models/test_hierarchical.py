"""Hierarchical latents: a linear-Gaussian two-layer model built from the hvae's classes has an
exact log p(x), which the ELBO of the exact posterior equals and avi's IWAE estimate reaches
within its standard error; the posterior chain's density is the sum of its factors and its draws
are differentiable; and ``avi fit --model hvae`` trains (elbo, iwae), evaluates, decomposes its
gaps and records active units per layer, as Burda et al.'s "16+5"."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal, Normal
from typer.testing import CliRunner

from avi.cli import app
from avi.encoders import AmortizedPosterior
from avi.errors import ConfigError
from avi.evaluation.bounds import log_likelihood
from avi.evaluation.collapse import active_units_by_layer, collapse_diagnostics, dimension_kl
from avi.families import HierarchicalFamily, inverse_softplus
from avi.models import HierarchicalVAE, VAEModel, latent_layers
from avi.nn import mlp
from avi.objectives.bounds import elbo_terms, log_weights
from avi.runs.config import load_config

D, K1, K2 = 4, 2, 2


def _set(layer: nn.Module, weight: Tensor, bias: Tensor) -> None:
    assert isinstance(layer, nn.Linear)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)


def _gaussian_layer(layer: nn.Module, weight: Tensor, bias: Tensor, scale: Tensor) -> None:
    """A linear (mu, rho) layer of N(weight @ parent + bias, diag(scale^2)): rho's weights zero."""
    _set(layer, torch.cat([weight, torch.zeros_like(weight)]), torch.cat([bias, inverse_softplus(scale)]))


def _linear_gaussian(diagonal: bool) -> tuple[HierarchicalVAE, dict[str, Tensor]]:
    """z_2 ~ N(0, I), z_1 = A z_2 + b + s_1 eps, x = W z_1 + c + s_0 eps in the hvae's classes
    with linear maps, float64; ``diagonal``: A diagonal and W's columns orthogonal, so that the
    exact posterior is a chain of mean-field Gaussians (q can be exact)."""
    g = torch.Generator().manual_seed(3)
    a = torch.diag(torch.tensor([1.5, -0.8])) if diagonal else torch.randn(K1, K2, generator=g, dtype=torch.float64)
    w = torch.linalg.qr(torch.randn(D, K1, generator=g, dtype=torch.float64))[0] * torch.tensor([2.0, 1.2])
    if not diagonal:
        w = w + 0.7 * torch.randn(D, K1, generator=g, dtype=torch.float64)
    p = {"A": a, "b": torch.tensor([0.3, -0.5]), "s1": torch.full((K1,), 0.6), "W": w, "c": torch.randn(D, generator=g)}
    p = {k: v.double() for k, v in p.items()} | {"s0": torch.full((D,), 0.5, dtype=torch.float64)}
    model = HierarchicalVAE(D, [K1, K2], hidden=(), layer_hidden=(), likelihood="gaussian").double()
    _gaussian_layer(model.conditionals[0][0], p["A"], p["b"], p["s1"])
    _set(model.bottom.decoder[0], p["W"], p["c"])
    with torch.no_grad():
        model.bottom.raw_scale.copy_(inverse_softplus(p["s0"]))
    return model, p


def _exact(p: dict[str, Tensor]) -> dict[str, Tensor]:
    """The joint of u = [z_1, z_2] and x in closed form: log p(x)'s Gaussian, the posterior
    p(u | x) = N(G x + g, S) and p(z_2 | z_1) = N(M z_1 + m, C)."""
    a, b, w, c = p["A"], p["b"], p["W"], p["c"]
    cov1 = a @ a.T + torch.diag(p["s1"] ** 2)
    cov_u = torch.cat([torch.cat([cov1, a], 1), torch.cat([a.T, torch.eye(K2, dtype=a.dtype)], 1)])
    mean_u = torch.cat([b, torch.zeros(K2, dtype=a.dtype)])
    h = torch.cat([w, torch.zeros(D, K2, dtype=a.dtype)], 1)
    noise = torch.diag(p["s0"] ** 2)
    marginal = MultivariateNormal(w @ b + c, w @ cov1 @ w.T + noise)
    post_cov = torch.linalg.inv(torch.linalg.inv(cov_u) + h.T @ torch.linalg.inv(noise) @ h)
    gain = post_cov @ h.T @ torch.linalg.inv(noise)
    m_gain = a.T @ torch.linalg.inv(cov1)
    return {
        "marginal_loc": marginal.loc, "marginal_cov": marginal.covariance_matrix, "G": gain,
        "g": post_cov @ torch.linalg.solve(cov_u, mean_u) - gain @ c, "S": post_cov,
        "M": m_gain, "m": -m_gain @ b, "C": torch.eye(K2, dtype=a.dtype) - m_gain @ a,
    }  # fmt: skip


def _posterior(exact: dict[str, Tensor], inflate: float = 1.0) -> AmortizedPosterior:
    """q(z_1 | x) q(z_2 | z_1) in the hierarchical family with linear maps: the exact posterior's
    means, the standard deviations of its marginals times ``inflate``."""
    family = HierarchicalFamily([K1, K2], hidden=()).double()
    encoder = mlp([D, 2 * K1]).double()
    scale1 = exact["S"][:K1, :K1].diagonal().sqrt() * inflate
    _gaussian_layer(encoder[0], exact["G"][:K1], exact["g"][:K1], scale1)
    _gaussian_layer(family.conditionals[0][0], exact["M"], exact["m"], exact["C"].diagonal().sqrt() * inflate)
    return AmortizedPosterior(encoder, family)


def _exact_log_px(x: Tensor, exact: dict[str, Tensor]) -> Tensor:
    return MultivariateNormal(exact["marginal_loc"], exact["marginal_cov"]).log_prob(x)


def test_the_elbo_of_the_exact_posterior_is_log_px_at_every_draw() -> None:
    """With q = p(z | x) (a chain of mean-field Gaussians for diagonal maps) every log weight
    log p(x, z) - log q(z | x) is log p(x): the prior, likelihood and posterior chains agree
    with the closed form to float64 rounding."""
    model, p = _linear_gaussian(diagonal=True)
    exact = _exact(p)
    assert torch.allclose(exact["S"][:K1, :K1], torch.diag(exact["S"][:K1, :K1].diagonal()), atol=1e-12)
    x = model.sample(50, torch.Generator().manual_seed(0))[0]
    q = _posterior(exact)(x)
    log_lik, log_prior, log_q = log_weights(model, q, x, 20)
    exact_log_px = _exact_log_px(x, exact)
    torch.testing.assert_close(log_lik + log_prior - log_q, exact_log_px.expand(20, -1), rtol=0, atol=1e-10)
    torch.testing.assert_close(elbo_terms(model, q, x, num_samples=3).value, exact_log_px, rtol=0, atol=1e-10)


def test_iwae_matches_the_exact_marginal_within_its_standard_error() -> None:
    """For a linear-Gaussian model whose posterior q cannot match (full maps, inflated mean-field
    scales), avi's IWAE estimate with k = 2000 averages to the exact log p(x) within four
    jackknife standard errors of the mean, while the ELBO stays clearly below."""
    model, p = _linear_gaussian(diagonal=False)
    exact = _exact(p)
    x = model.sample(40, torch.Generator().manual_seed(1))[0]
    posterior = _posterior(exact, inflate=1.3)
    estimate = log_likelihood(model, posterior, x, k=2000, seed=7)
    diff, stderr = estimate.value - _exact_log_px(x, exact), estimate.stderr.pow(2).sum().sqrt() / x.shape[0]
    assert diff.mean().abs() < 4 * stderr, (diff.mean(), stderr)
    torch.manual_seed(2)
    elbo = elbo_terms(model, posterior(x), x, num_samples=200).value
    assert (_exact_log_px(x, exact) - elbo).mean() > 20 * stderr


def _chain() -> tuple[HierarchicalVAE, AmortizedPosterior, Tensor]:
    torch.manual_seed(0)
    model = HierarchicalVAE(6, [3, 2], hidden=[8], layer_hidden=[5], activation="tanh").double()
    family = HierarchicalFamily([3, 2], hidden=[5], activation="tanh")
    posterior = AmortizedPosterior(mlp([6, 8, family.param_size], "tanh"), family).double()
    return model, posterior, torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64))


def test_log_densities_are_the_sums_of_their_factors() -> None:
    """log q(z | x) = log N(z_1; q(z_1 | x)) + log N(z_2; q(z_2 | z_1)) and log p(z) = log N(z_2;
    0, I) + log N(z_1; p(z_1 | z_2)), from the networks directly; the per-coordinate terms sum
    to them; rsample's log q in the same pass is log_prob's."""
    model, posterior, x = _chain()
    q = posterior(x)
    z, log_q = q.rsample_and_log_prob((7,))
    z1, z2 = z.split([3, 2], -1)
    loc, raw = posterior.encoder(x).split(3, -1)
    loc2, raw2 = posterior.family.conditionals[0](z1).split(2, -1)
    by_hand = Normal(loc, nn.functional.softplus(raw)).log_prob(z1).sum(-1)
    by_hand = by_hand + Normal(loc2, nn.functional.softplus(raw2)).log_prob(z2).sum(-1)
    torch.testing.assert_close(q.log_prob(z), by_hand)
    torch.testing.assert_close(log_q, by_hand)
    torch.testing.assert_close(q.coordinate_log_prob(z).sum(-1), by_hand)
    prior = model.prior()
    loc1, raw1 = model.conditionals[0](z2).split(3, -1)
    prior_by_hand = Normal(0.0, 1.0).log_prob(z2).sum(-1)
    prior_by_hand = prior_by_hand + Normal(loc1, nn.functional.softplus(raw1)).log_prob(z1).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), prior_by_hand)
    torch.testing.assert_close(prior.coordinate_log_prob(z).sum(-1), prior_by_hand)
    assert q.batch_shape == (4,) and q.event_shape == (5,) and prior.sample((9,)).shape == (9, 5)


def test_draws_are_reparameterised_in_every_layer() -> None:
    """rsample is differentiable in lambda (gradcheck, fixed noise) and passes gradients to the
    family's own network of q(z_2 | z_1)."""
    _, posterior, x = _chain()
    family = posterior.family
    params = posterior.encoder(x).detach().requires_grad_()

    def draw(params: Tensor) -> Tensor:
        torch.manual_seed(5)
        return family(params).rsample((3,))

    assert torch.autograd.gradcheck(draw, (params,))
    draw(params)[..., 3:].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in family.parameters())


def test_model_draws_follow_the_prior_down_the_layers() -> None:
    """sample(n, generator) is reproducible and its z_1 | z_2 has p(z_1 | z_2)'s moments."""
    model, _, _ = _chain()
    x, z = model.sample(20_000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.sample(20_000, torch.Generator().manual_seed(4))[1], z)
    z1, z2 = z.split([3, 2], -1)
    loc, raw = model.conditionals[0](z2).split(3, -1)
    standardised = (z1 - loc) / nn.functional.softplus(raw)
    assert standardised.mean(0).abs().max() < 0.05 and (standardised.std(0) - 1).abs().max() < 0.05
    assert z2.std(0).sub(1).abs().max() < 0.05 and x.shape == (20_000, 6)


def test_active_units_and_kl_per_unit_are_split_by_layer() -> None:
    """Active units are counted per layer (one count for a one-vector model); the KL per unit
    of a hierarchical q and prior sums to their Monte Carlo KL."""
    assert active_units_by_layer(torch.tensor([0.5, 0.0, 0.02, 0.0, 0.3]), (3, 2)) == (2, 1)
    assert active_units_by_layer(torch.tensor([0.5, 0.0]), (3, 2)) == (1,)
    assert latent_layers(VAEModel(6, 4)) == (4,) and latent_layers(HierarchicalVAE(6, [3, 2])) == (3, 2)
    model, posterior, x = _chain()
    q, prior = posterior(x), model.prior()
    torch.manual_seed(1)
    per_unit = dimension_kl(q, prior, num_samples=4000)
    z = q.sample((4000,))
    assert per_unit.shape == (4, 5)
    torch.testing.assert_close(per_unit.sum(-1), (q.log_prob(z) - prior.log_prob(z)).mean(0), atol=0.1, rtol=0)
    d = collapse_diagnostics(model, posterior, torch.bernoulli(torch.full((200, 6), 0.5, dtype=torch.float64)))
    assert len(d.active_units_per_layer) == 2 and sum(d.active_units_per_layer) == d.active_units


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"name": "hvae", "layers": [3, 2], "latent_dim": 4}}, "sum of model.layers"),
        ({"model": {"name": "vae"}, "inference": {"family": "hierarchical"}}, "latent layers of model 'hvae'"),
        ({"model": {"name": "vae", "layers": [3, 2]}}, "model.layers applies to the hvae"),
        ({"model": {"preset": "burda-2l", "name": "vae"}}, "does not apply to model 'vae'"),
        ({"model": {"name": "hvae"}, "objective": {"estimator": "stl"}}, "needs a Gaussian family"),
        ({"model": {"name": "hvae"}, "remedies": {"free_bits": 0.5}}, "free bits"),
    ],
)
def test_config_refuses_what_the_layers_rule_out(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, values)


def test_preset_burda_2l_is_the_authors_two_layer_architecture() -> None:
    """Burda et al.'s code (yburda/iwae): z_1 100 and z_2 50 units, 200-200 between x and z_1,
    100-100 between the layers, tanh; latent_dim the sum."""
    m = load_config(None, {"model": {"preset": "burda-2l"}}).model
    assert (m.name, m.layers, m.hidden, m.layer_hidden, m.activation, m.latent_dim) == (
        "hvae", [100, 50], [200, 200], [100, 100], "tanh", 150,
    )  # fmt: skip
    assert load_config(None, {"model": {"name": "hvae"}}).inference.family == "hierarchical"


_JOB = """
[model]
name = "hvae"
layers = [3, 2]
hidden = [16]
layer_hidden = [8]
[data]
source = "synthetic"
synthetic_dim = 12
synthetic_points = 400
[train]
epochs = 2
batch_size = 50
threads = 1
"""


def _avi(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result


@pytest.mark.parametrize("objective", [[], ["--objective", "iwae", "--k", "5"]])
def test_fit_evaluate_and_gaps_of_an_hvae(objective: list[str], tmp_path: Path) -> None:
    """avi fit --model hvae trains two epochs (elbo, iwae k=5) and records the active units of
    each layer beside their total; avi evaluate --k 20 scores it; avi gaps decomposes its gap
    (q* refines q(z_1 | x), the network of q(z_2 | z_1) held as trained)."""
    job, run = tmp_path / "job.toml", tmp_path / "run"
    job.write_text(_JOB)
    _avi("fit", str(job), *objective, "--out", str(run))
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and sum(k.startswith("kl_dim_") for k in rows[0]) == 5
    for row in rows:
        layers = int(row["active_units_layer_0"]), int(row["active_units_layer_1"])
        assert 0 <= layers[0] <= 3 and 0 <= layers[1] <= 2 and sum(layers) == int(row["active_units"])
    evaluation = json.loads(_avi("evaluate", str(run), "--k", "20", "--json").stdout)
    assert math.isfinite(evaluation["log_likelihood"]) and evaluation["log_likelihood"] >= evaluation["elbo"] - 0.5
    per_layer = evaluation["active_units_per_layer"]
    assert len(per_layer) == 2 and sum(per_layer) == evaluation["active_units"]
    table = _avi("evaluate", str(run), "--k", "20").stdout
    assert f"{evaluation['active_units']} ({per_layer[0]}+{per_layer[1]} by layer) of 5" in table
    if objective:
        gaps = json.loads(_avi("gaps", str(run), "--points", "10", "--steps", "5", "--k", "20", "--json").stdout)
        assert gaps["family"] == "hierarchical" and math.isfinite(gaps["approximation_gap"])
