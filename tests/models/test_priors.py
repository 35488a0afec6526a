"""Learned priors: the mixture of Gaussians and the VampPrior are normalised mixtures, their
draws follow their densities, the VampPrior references its encoder without owning it, the
collapse diagnostics read their marginals, and ``avi fit --prior`` trains, resumes and evaluates."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.distributions import Independent, Normal
from typer.testing import CliRunner

from avi.cli import app
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.evaluation import log_likelihood
from avi.evaluation.collapse import dimension_kl
from avi.evaluation.importance import NoiseStream, chunk_log_weights
from avi.families import make_family
from avi.models import VAEModel, priors
from avi.models.priors import MixtureOfGaussians, MoGPrior, VampPrior, pseudo_input_start
from avi.nn import eval_mode
from avi.objectives.bounds import analytic_kl_or_none
from avi.runs.build import build_model, build_posterior
from avi.runs.config import load_config
from avi.runs.load import build_run, load_trained
from avi.runs.rundir import read_checkpoint, read_config
from avi.seeding import seeded
from tests.runs.conftest import small_job


def _mog_prior(components: int = 3) -> MoGPrior:
    """A 2-D mixture in float64 with unequal weights, means in [-1, 1], scales in [0.3, 1]."""
    prior = MoGPrior(2, components).double()
    with torch.no_grad():
        prior.logits.copy_(torch.randn(components))
        prior.loc.uniform_(-1, 1)
        prior.raw_scale.copy_(torch.empty(components, 2).uniform_(0.3, 1).expm1().log())
    return prior


def _mog() -> MixtureOfGaussians:
    return _mog_prior()()


def _vamp(family: str = "full-rank", components: int = 4, data_dim: int = 5) -> tuple[VampPrior, AmortizedPosterior]:
    """A VampPrior over 2 latents in float64, attached to a random encoder of ``family``."""
    fam = make_family(family, 2)
    posterior = AmortizedPosterior(mlp_encoder(data_dim, [8], fam.param_size, "tanh"), fam).double()
    vamp = VampPrior(pseudo_input_start(components, data_dim, torch.rand(10, data_dim)).double())
    vamp.attach(posterior)
    return vamp, posterior


def _covariances(p: MixtureOfGaussians) -> Tensor:
    """The components' covariances, (C, K, K)."""
    return torch.diag_embed(p.scale**2) if p.diagonal else p.scale @ p.scale.transpose(-1, -2)


def _grid_integral(p: MixtureOfGaussians) -> tuple[float, float]:
    """The integral of exp(log p) over R^2 by the midpoint rule, and a bound on its error.

    The box [c - L, c + L]^2, L = 9 s_max beyond the farthest component mean (s_max the largest
    marginal scale), leaves out at most 2 Phi(-9) of each component's mass per dimension: 4 Phi(-9)
    in all. On the whole plane the midpoint rule of step h errs, for a Gaussian of covariance S,
    by sum over the lattice frequencies w = 2 pi m / h (m != 0) of exp(-w' S w / 2) (Poisson
    summation), at most 8 exp(-2 pi^2 lambda_min / h^2) with lambda_min the least eigenvalue of
    any S: with h = sqrt(lambda_min) / 3, 1e-76. Float64 rounding of the sum adds below 1e-10.
    """
    loc, s_max = p.loc, p.base_dist.scale.max().item()
    lambda_min = torch.linalg.eigvalsh(_covariances(p)).min().item()
    centre = ((loc.max(0).values + loc.min(0).values) / 2).tolist()
    half = (loc.max(0).values - loc.min(0).values).max().item() / 2 + 9 * s_max
    h = math.sqrt(lambda_min) / 3
    n = math.ceil(2 * half / h)
    axes = [c - half + h * (torch.arange(n, dtype=torch.float64) + 0.5) for c in centre]
    z = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (n, n, 2)
    integral = p.log_prob(z).exp().sum().item() * h * h
    tail = 4 * 0.5 * math.erfc(9 / math.sqrt(2))
    quadrature = 8 * math.exp(-2 * math.pi**2 * lambda_min / h**2)
    return integral, tail + quadrature + 1e-10


def _vamp_mixture(family: str) -> MixtureOfGaussians:
    return _vamp(family)[0]()


MIXTURES = {
    "mog": _mog,
    "vamp-full-rank": lambda: _vamp_mixture("full-rank"),
    "vamp": lambda: _vamp_mixture("mean-field"),
}


@pytest.mark.parametrize("name", MIXTURES)
def test_density_integrates_to_one(name: str) -> None:
    with torch.no_grad():
        integral, tolerance = _grid_integral(MIXTURES[name]())
    assert abs(integral - 1) <= tolerance


@pytest.mark.parametrize("family", ["mean-field", "full-rank"])
def test_vamp_log_prob_is_the_mean_of_the_posteriors_at_the_pseudo_inputs(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vamp, posterior = _vamp(family, components=6)
    z = 2 * torch.randn(5, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        q = posterior(vamp.pseudo_inputs)  # q(z | u_c): batch (6,)
        expected = torch.logsumexp(q.log_prob(z[..., None, :]), dim=-1) - math.log(6)
        torch.testing.assert_close(vamp().log_prob(z), expected, rtol=1e-12, atol=1e-12)
        monkeypatch.setattr(priors, "BLOCK", 7)  # a row or two at a time: the same numbers
        torch.testing.assert_close(vamp().log_prob(z), expected, rtol=1e-12, atol=1e-12)


def test_mog_log_prob_is_the_weighted_sum_of_its_gaussians() -> None:
    prior, z = _mog_prior(), 2 * torch.randn(5, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        loc, scale = prior.loc, torch.nn.functional.softplus(prior.raw_scale)  # (C, 2)
        log_n = (-0.5 * ((z[..., None, :] - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        expected = torch.logsumexp(log_n + torch.log_softmax(prior.logits, -1), dim=-1)
        torch.testing.assert_close(prior().log_prob(z), expected, rtol=1e-12, atol=1e-12)


U32, U64 = 2.0**-24, 2.0**-53  # unit roundoffs: a float32 / float64 operation errs by at most u |result|


def _wide_mixture(dtype: torch.dtype, k: int = 40, c: int = 50) -> MixtureOfGaussians:
    """A mixture at a trained VampPrior's scales: K = 40, means in [-4, 4], scales from 0.02 (an
    active unit's narrow posterior) to 1.5, unequal weights; its parameters are float32 numbers
    (in ``dtype``), so that a float64 reference sees exactly the inputs a float32 run does."""
    loc = torch.empty(c, k).uniform_(-4, 4)
    scale = torch.empty(c, k).uniform_(math.log(0.02), math.log(1.5)).exp()
    components = Independent(Normal(loc.to(dtype), scale.to(dtype)), 1)
    return MixtureOfGaussians(torch.randn(c).to(dtype), components)


def _wide_points(p: MixtureOfGaussians, n: int = 60) -> Tensor:
    """Points near a component (z = mu_c + s_c eps: the expansion of the square cancels most
    there), near 0, and far from every component (|z_k| ~ 50)."""
    index = torch.randint(p.loc.shape[0], (n,))
    near = p.loc[index] + p.scale[index] * torch.randn(n, p.loc.shape[1], dtype=p.loc.dtype)
    far = 50 * torch.randn(n, p.loc.shape[1], dtype=p.loc.dtype)
    return torch.cat([near, 2 * torch.randn_like(near), far, torch.full_like(far[:1], 50.0)])


def _direct(p: MixtureOfGaussians, z: Tensor) -> tuple[Tensor, Tensor]:
    """The direct form logsumexp_c [log w_c + log N(z; mu_c, diag(s_c^2))] in float64 (n,), and
    the log terms (n, C), from the mixture's own numbers."""
    loc, scale, log_w = p.loc.double(), p.scale.double(), p.log_weights.double()
    log_n = (-0.5 * ((z.double()[:, None] - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    terms = log_n + log_w
    return torch.logsumexp(terms, -1), terms


def _expansion_error(p: MixtureOfGaussians, z: Tensor, terms: Tensor, reference: Tensor) -> Tensor:
    """A bound (n,) on the float64 error of the fast density: each term's (a sum of 2K + 1
    products, from a = 1/s^2, a mu and the offset, each rounded once) errs by at most
    (2K + 3) u sum_k a_ck (|z_k| + |mu_ck|)^2 =: (2K + 3) u S_c; the log-sum-exp passes on the
    responsibility-weighted mean of those (first order) and adds its own few roundings,
    4 u (|log p| + log C)."""
    loc, scale = p.loc.double(), p.scale.double()
    s = ((z.double().abs()[:, None] + loc.abs()) ** 2 / scale**2).sum(-1)  # S_c, (n, C)
    weighted = (torch.softmax(terms, -1) * s).sum(-1)
    k, c = loc.shape[1], loc.shape[0]
    return (2 * k + 3) * U64 * weighted + 4 * U64 * (reference.abs() + math.log(c))


def test_fast_density_is_the_direct_form_rounded_once_in_float32() -> None:
    """In float32 the fast density is the exact one rounded once to float32: within
    u32 |log p| plus its float64 error (:func:`_expansion_error`, near 0 here). Expanding the
    square in float32 instead would miss by up to a nat near the narrow components (S_c up to
    40 (8 / 0.02)^2 = 6e6 against u32 = 6e-8), and the direct float32 form by 1e-6 |log p|."""
    with seeded(3):
        p = _wide_mixture(torch.float32)
        z = _wide_points(p)
    reference, terms = _direct(p, z)
    fast = p.log_prob(z)
    assert fast.dtype == torch.float32
    bound = U32 * reference.abs() + (1 + U32) * _expansion_error(p, z, terms, reference)
    assert ((fast.double() - reference).abs() <= bound).all()


def test_fast_density_is_the_direct_form_in_float64() -> None:
    """In float64 both forms err: the fast one by :func:`_expansion_error`, the direct one by at
    most (K + 4) u (|t|_r + sum_k |log s_ck| + K) per term (K + 4 roundings of each summand,
    |t|_r the responsibility-weighted size of the terms) plus its log-sum-exp's 4 u (|log p| +
    log C)."""
    with seeded(4):
        p = _wide_mixture(torch.float64)
        z = _wide_points(p)
    reference, terms = _direct(p, z)
    r = torch.softmax(terms, -1)
    k, c = p.loc.shape[1], p.loc.shape[0]
    size = (r * (terms.abs() + p.scale.log().abs().sum(-1) + k)).sum(-1)
    direct = (k + 4) * U64 * size + 4 * U64 * (reference.abs() + math.log(c))
    bound = _expansion_error(p, z, terms, reference) + direct
    assert ((p.log_prob(z) - reference).abs() <= bound).all()


def _gradient_tolerance(p: MixtureOfGaussians, z: Tensor) -> float:
    """N u R: the fast form's gradients differ from the exact ones by rounding amplified by
    cancellation, its b - a z = a (mu - z) by at most a factor R = max (|z_k| + |mu_ck|) / s_ck
    over u, summed over at most N = n + C + 2K products (the backward of its matrix product);
    the direct form's by less. A bound relative to the gradient's largest entry."""
    ratio = ((z.detach().abs()[:, None] + p.loc.detach().abs()) / p.scale.detach()).max().item()
    return (z.shape[0] + p.loc.shape[0] + 2 * p.loc.shape[1]) * U64 * ratio


def test_fast_density_has_the_direct_forms_gradients() -> None:
    """d log p / d(weights, means, scales, z) of the fast form (float64) against autograd of the
    direct form, at the wide mixture's points: within :func:`_gradient_tolerance` (R about
    9,000 here: 3e-10 relative), where a sign error or a missing term is off by O(1)."""
    with seeded(5):
        prior = MoGPrior(40, 50).double()
        with torch.no_grad():
            prior.loc.uniform_(-4, 4)
            prior.raw_scale.copy_(torch.empty(50, 40).uniform_(math.log(0.02), math.log(1.5)).exp().expm1().log())
            prior.logits.normal_()
        z = _wide_points(prior()).detach().requires_grad_()
    leaves = [prior.logits, prior.loc, prior.raw_scale, z]
    fast = torch.autograd.grad(prior().log_prob(z).sum(), leaves)
    direct = torch.autograd.grad(_direct(prior(), z)[0].sum(), leaves)
    tolerance = _gradient_tolerance(prior(), z)
    for g, expected in zip(fast, direct, strict=True):
        assert (g - expected).abs().max() <= tolerance * expected.abs().max()


def test_fast_density_in_float32_has_the_exact_gradients_rounded_once() -> None:
    """Training's path: float32 means, scales and z (an encoder's outputs) into the float64
    product and back. Both forms' gradients at those float32 leaves are float64 gradients of
    the same float32 numbers, each within :func:`_gradient_tolerance` (relative to the largest
    entry) of the exact ones, rounded once to float32 by the cast's backward: they differ by at
    most u32 (|g| + |expected|) plus twice that float64 tolerance. A float32 expansion of the
    square would miss by far more near the narrow components."""
    with seeded(6):
        p = _wide_mixture(torch.float32)
        loc, scale = p.loc.clone().requires_grad_(), p.scale.clone().requires_grad_()
        z = _wide_points(p).requires_grad_()
    mixture = MixtureOfGaussians(p.log_weights, Independent(Normal(loc, scale), 1))
    fast = torch.autograd.grad(mixture.log_prob(z).sum(), [loc, scale, z])
    direct = torch.autograd.grad(_direct(mixture, z)[0].sum(), [loc, scale, z])
    tolerance = 2 * _gradient_tolerance(mixture, z)
    for g, expected in zip(fast, direct, strict=True):
        assert g.dtype == torch.float32
        bound = U32 * (g.abs() + expected.abs()) + tolerance * expected.abs().max()
        assert ((g - expected).abs() <= bound).all()


def test_fast_density_gives_the_pseudo_inputs_and_encoder_the_direct_gradients() -> None:
    """The VampPrior's gradient reaches its pseudo-inputs and the encoder as the direct form's
    does (float64, within :func:`_gradient_tolerance`)."""
    vamp, posterior = _vamp("mean-field", components=6)
    z = 2 * torch.randn(9, 2, dtype=torch.float64)
    leaves = [vamp.pseudo_inputs, *posterior.parameters()]
    fast = torch.autograd.grad(vamp().log_prob(z).sum(), leaves)
    direct = torch.autograd.grad(_direct(vamp(), z)[0].sum(), leaves)
    tolerance = _gradient_tolerance(vamp(), z)
    for g, expected in zip(fast, direct, strict=True):
        assert (g - expected).abs().max() <= tolerance * expected.abs().max()


def test_marginal_densities_are_the_direct_form_with_and_without_autograd() -> None:
    """The per-dimension marginals log p(z_k) (the diagnostics' KL reads them), formed in place
    without autograd and out of place with it, against logsumexp_c log w_c N(z_k; mu_ck, s_ck)
    in float64: float32 rounding of each of the terms' 6 operations and the log-sum-exp's 4,
    10 u32 (|t|_r + |log p_k| + log C), bounds the difference; the gradient with respect to the
    scales matches too (float64: 1e-12 relative, no cancellation)."""
    with seeded(6):
        p = _wide_mixture(torch.float32)
        z = _wide_points(p)
    loc, scale, log_w = (t.double() for t in (p.loc, p.scale, p.log_weights))
    terms = Normal(loc, scale).log_prob(z.double()[:, None]) + log_w[:, None]  # (n, C, K)
    reference = torch.logsumexp(terms, 1)
    size = (torch.softmax(terms, 1) * terms.abs()).sum(1)
    bound = 10 * U32 * (size + reference.abs() + math.log(p.loc.shape[0]))
    with torch.no_grad():
        assert ((p.base_dist.log_prob(z).double() - reference).abs() <= bound).all()
    scale64 = scale.clone().requires_grad_()
    marginals = priors._Marginals(log_w, loc, scale64)
    value = marginals.log_prob(z.double())
    assert value.requires_grad and ((value.detach() - reference).abs() <= bound).all()
    (expected,) = torch.autograd.grad(
        torch.logsumexp(Normal(loc, scale64).log_prob(z.double()[:, None]) + log_w[:, None], 1).sum(), scale64
    )
    (g,) = torch.autograd.grad(value.sum(), scale64)
    assert (g - expected).abs().max() <= 1e-12 * expected.abs().max()


def test_log_sum_exp_keeps_torchs_values_at_the_extremes() -> None:
    """Terms far below the largest (exp's argument under EXP_FLOOR), all -inf, one +inf, a nan:
    torch.logsumexp's results, in place and with autograd."""
    t = torch.tensor(
        [[0.0, -200.0, -1000.0], [-math.inf] * 3, [1.0, math.inf, 2.0], [0.0, math.nan, 1.0], [-90.0, -5000.0, -95.0]]
    )
    expected = torch.logsumexp(t, -1)
    torch.testing.assert_close(priors._logsumexp(t.clone(), -1), expected, equal_nan=True)
    leaf = t.clone().requires_grad_()
    torch.testing.assert_close(priors._logsumexp(leaf, -1), expected, equal_nan=True)


@pytest.mark.parametrize("name", MIXTURES)
def test_draws_have_the_mixtures_moments(name: str) -> None:
    """Sample means and covariances of n = 20,000 draws against the mixture's: mean sum_c w_c
    mu_c, covariance sum_c w_c (S_c + mu_c mu_c') - mean mean'. Each estimate is within 5 of its
    Monte Carlo standard errors (sd of the summand / sqrt(n), the sd from the draws; a fixed
    seed). A draw with L' for L (a transposed Cholesky factor) or with equal component weights
    would miss the covariance or the mean by far more."""
    with torch.no_grad():
        p, n = MIXTURES[name](), 20_000
        weights = p.log_weights.exp()
        mean = (weights[:, None] * p.loc).sum(0)
        second = (weights[:, None, None] * (_covariances(p) + p.loc[:, :, None] * p.loc[:, None, :])).sum(0)
        covariance = second - mean[:, None] * mean[None, :]
        torch.testing.assert_close(p.mean, mean)
        torch.testing.assert_close(p.variance, covariance.diagonal())
        for z in (p.draw(n, torch.Generator().manual_seed(5)), p.sample((100, 200)).reshape(n, 2)):
            centred = z - mean
            assert ((z.mean(0) - mean).abs() <= 5 * z.std(0) / math.sqrt(n)).all()
            products = centred[:, :, None] * centred[:, None, :]  # (n, 2, 2)
            assert ((products.mean(0) - covariance).abs() <= 5 * products.std(0) / math.sqrt(n)).all()


def test_model_samples_come_from_its_learned_prior() -> None:
    """VAEModel.sample draws z from the mixture with the generator given, not from the Gaussian of
    the prior's mean and variance: two far-apart components give no z near 0."""
    prior = MoGPrior(1, 2)
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([[-10.0], [10.0]]))
        prior.raw_scale.fill_(-3.0)  # scale softplus(-3) = 0.05
    model = VAEModel(3, 1, hidden=(4,), learned_prior=prior)
    x, z = model.sample(500, torch.Generator().manual_seed(2))
    assert x.shape == (500, 3) and ((z.abs() - 10).abs() < 0.5).all()
    assert 200 < int((z > 0).sum()) < 300  # equal weights: Binomial(500, 1/2), sd 11
    again = model.prior().draw(500, torch.Generator().manual_seed(2))  # type: ignore[attr-defined]
    torch.testing.assert_close(z, again)


def test_vamp_prior_references_its_encoder_and_trains_both() -> None:
    """The encoder's parameters stay the posterior's (optimised and saved once); log p(z) has a
    gradient for the pseudo-inputs and for the encoder, as in Tomczak and Welling's model."""
    vamp, posterior = _vamp("mean-field")
    model = VAEModel(5, 2, hidden=(4,), learned_prior=vamp).double()
    assert [name for name, _ in model.named_parameters() if "decoder" not in name] == ["learned_prior.pseudo_inputs"]
    assert [key for key in model.state_dict() if key.startswith("learned_prior")] == ["learned_prior.pseudo_inputs"]
    model.prior().log_prob(torch.randn(7, 2, dtype=torch.float64)).sum().backward()
    assert vamp.pseudo_inputs.grad is not None and vamp.pseudo_inputs.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in posterior.parameters())
    with pytest.raises(ConfigError, match="no posterior to mix"):
        VampPrior(torch.zeros(3, 5))()
    table = AmortizedPosterior(mlp_encoder(5, [], 4), make_family("mean-field", 2))
    table.amortized = False
    with pytest.raises(ConfigError, match="needs an amortized posterior"):
        VampPrior(torch.zeros(3, 5)).attach(table)


def test_importance_sampling_forms_the_vamp_prior_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """p(z) is constant over a log-likelihood call: the encoder runs on the pseudo-inputs once,
    not once per chunk of samples (4 points in batches of 2, 20 samples in chunks of 5: 8
    chunks), and the estimates are those of a prior formed for each chunk."""
    vamp, posterior = _vamp("mean-field")
    model = VAEModel(5, 2, hidden=(4,), learned_prior=vamp).double()
    x = torch.rand(4, 5, dtype=torch.float64).bernoulli()
    calls = []
    forward = VampPrior.forward

    def counted(self: VampPrior) -> MixtureOfGaussians:
        calls.append(1)
        return forward(self)

    monkeypatch.setattr(VampPrior, "forward", counted)
    sizes = {"k": 20, "batch_size": 2, "chunk_size": 5, "seed": 3, "threads": 1}
    once = log_likelihood(model, posterior, x, **sizes)
    assert len(calls) == 1
    rows = []
    with torch.no_grad(), eval_mode(posterior):
        for i in (0, 2):
            noise = NoiseStream(3, torch.arange(i, i + 2), 2, torch.float64, x.device)
            q = posterior(x[i : i + 2])
            rows.append(torch.cat([chunk_log_weights(model, q, x[i : i + 2], 5, noise) for _ in range(4)], 1))
    expected = torch.logsumexp(torch.cat(rows), 1) - math.log(20)
    torch.testing.assert_close(once.value, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ["mean-field", "full-rank"])
def test_kl_to_a_mixture_is_estimated_and_per_dimension_against_its_marginals(family: str) -> None:
    """No closed form (and no ambiguous dispatch); the collapse diagnostics' KL per dimension is
    KL(q(z_k|x) || p(z_k)) with p(z_k) the mixture's marginal, checked against a 1-D midpoint
    rule (step 0.005 over +-12: error far below the Monte Carlo error of 40,000 draws, whose
    standard error bounds the difference 5 times over)."""
    vamp, posterior = _vamp(family)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        p, q = vamp(), posterior(torch.rand(3, 5, dtype=torch.float64))
        assert analytic_kl_or_none(q, p) is None
        kl = dimension_kl(q, p, num_samples=40_000)  # (3, 2)
        u = posterior(vamp.pseudo_inputs)  # the components q(z | u_c): their marginals, (C, 2)
    marginal_p = Normal(u.mean, u.stddev)
    marginal_q = Normal(q.mean, q.stddev)  # (3, 2)

    def log_p(z: Tensor) -> Tensor:  # log (1/C) sum_c N(z_k; mu_ck, s_ck), z (..., 2) -> (..., 2)
        return torch.logsumexp(marginal_p.log_prob(z[..., None, :]), dim=-2) - math.log(u.mean.shape[0])

    grid = (torch.arange(-12, 12, 0.005, dtype=torch.float64) + 0.0025)[:, None, None].expand(-1, 3, 2)
    log_q = marginal_q.log_prob(grid)  # (G, 3, 2)
    exact = (log_q.exp() * (log_q - log_p(grid))).sum(0) * 0.005
    z = marginal_q.sample((40_000,))
    ratio_sd = (marginal_q.log_prob(z) - log_p(z)).std(0)
    assert ((kl - exact).abs() <= 5 * ratio_sd / math.sqrt(40_000)).all()


def test_the_first_posterior_built_for_a_model_is_its_vamp_prior_posterior() -> None:
    """avi gaps builds a second encoder for the run's model: the prior keeps the run's."""
    config = load_config(None, {"model": {"prior": "vamp", "prior_components": 3, "hidden": [4], "latent_dim": 2}})
    model = build_model(config, 6, torch.rand(10, 6))
    first = build_posterior(config, model, 10)
    build_posterior(config, model, 10)
    assert model.learned_prior.posterior is first  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": {"prior": "vamp"}, "inference": {"strategy": "per-datapoint"}}, "needs strategy 'amortized'"),
        ({"model": {"prior": "vamp"}, "inference": {"family": "iaf"}}, "family mean-field or full-rank"),
        ({"model": {"prior": "mog", "decoder": "made"}}, "not the made decoder"),
        ({"model": {"prior": "mog", "name": "ppca"}}, "not model 'ppca'"),
        ({"model": {"prior": "mog"}, "remedies": {"free_bits": 0.5}}, "free bits need a prior that factorises"),
        ({"model": {"prior": "vamp"}, "inference": {"denoise": 0.1}}, "set inference.denoise = 0"),
        ({"model": {"prior_components": 5}}, "model.prior_components applies to a learned prior"),
    ],
)
def test_config_refuses_a_learned_prior_where_it_cannot_apply(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, settings)


def test_unset_components_are_the_papers_500_pseudo_inputs_and_10_gaussians() -> None:
    assert load_config(None, {"model": {"prior": "vamp"}}).model.prior_components == 500
    assert load_config(None, {"model": {"prior": "mog"}}).model.prior_components == 10
    assert load_config(None, {}).model.prior_components is None


def _avi(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result


@pytest.mark.parametrize(("prior", "key"), [("vamp", "pseudo_inputs"), ("mog", "loc")])
def test_fit_resume_and_evaluate_with_a_learned_prior(prior: str, key: str, tmp_path: Path) -> None:
    """avi fit --prior trains the prior (its parameters move each epoch), --resume restores and
    trains it on, load_trained gives the checkpoint's, and avi evaluate scores the run."""
    job, run = tmp_path / "job.toml", tmp_path / "run"
    job.write_text(small_job(epochs=2))
    _avi("fit", str(job), "--prior", prior, "--out", str(run))
    config = read_config(run)
    with seeded(config.train.seed):
        start = build_run(config).model.state_dict()[f"learned_prior.{key}"]
    after_two = read_checkpoint(run / "checkpoint.pt")["model"][f"learned_prior.{key}"]
    torch.testing.assert_close(load_trained(run).model.state_dict()[f"learned_prior.{key}"], after_two, rtol=0, atol=0)
    _avi("fit", "--resume", str(run), "--epochs", "3")
    after_three = read_checkpoint(run / "checkpoint.pt")["model"][f"learned_prior.{key}"]
    assert not torch.equal(start, after_two) and not torch.equal(after_two, after_three)
    evaluation = json.loads(_avi("evaluate", str(run), "--k", "20", "--json").stdout)
    assert evaluation["checkpoint_epoch"] == 3 and math.isfinite(evaluation["log_likelihood"])
    assert len(evaluation["kl_per_dim"]) == 2 and all(math.isfinite(v) for v in evaluation["kl_per_dim"])
    assert config.model.prior_components == {"vamp": 500, "mog": 10}[prior]
