"""Collapse diagnostics against cases with known answers: a decoder that ignores z (nothing to
encode: I(x; z) = 0, no active unit) and PPCA with its exact posterior (closed-form I(x; z))."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, LowRankMultivariateNormal, Normal

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, DenoisingEncoder, mlp_encoder
from avi.errors import ConfigError
from avi.evaluation import active_units
from avi.evaluation.collapse import (
    batch_mutual_information,
    collapse_diagnostics,
    dimension_kl,
    mutual_information,
    posterior_mean_variance,
)
from avi.families import make_family
from avi.families.discrete import CategoricalFamily
from avi.inference import LocalPosterior, fit
from avi.models import CategoricalVAE, LatentVariableModel, LinearGaussian
from tests.closed_forms import prior_kl


class IgnoresZ(LatentVariableModel):
    """p(z) = N(0, I_K); p(x|z) = prod_d Bernoulli(sigmoid(b_d)), the same for every z."""

    binary_data = True

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.logits = nn.Parameter(torch.zeros(data_dim))

    def prior(self) -> Distribution:
        zero = self.logits.new_zeros(self.latent_dim)
        return Independent(Normal(zero, zero + 1), 1)

    def likelihood(self, z: Tensor) -> Distribution:
        return Independent(Bernoulli(logits=self.logits.expand(*z.shape[:-1], self.data_dim)), 1)


class ExactPosterior(nn.Module):
    """q(z|x) = p(z|x) of a linear-Gaussian model."""

    def __init__(self, model: LinearGaussian) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        return self.model.exact_posterior(x)


def _closed_form_mi(model: LinearGaussian) -> float:
    """I(x; z) = H(z) - H(z|x) = 1/2 log det(I + W^T Psi^-1 W) for x = W z + mu + eps."""
    W, psi = model.W, model.noise_var
    return 0.5 * torch.logdet(torch.eye(model.latent_dim, dtype=W.dtype) + W.T @ (W / psi[:, None])).item()


def _expected_density_ratio(model: LinearGaussian, x: Tensor) -> float:
    """E[r], r = p(z|x) / p(z) under p(x) p(z|x), x averaged over the sample x.

    For q = N(m, S) and p = N(0, I): int q^2 / p dz = det(S)^-1 det(A)^-1/2
    exp(2 m^T S^-1 A^-1 S^-1 m - m^T S^-1 m), A = 2 S^-1 - I (positive definite here).
    """
    post = model.exact_posterior(x)
    S = post.covariance_matrix[0]
    S_inv = torch.linalg.inv(S)
    A = 2 * S_inv - torch.eye(model.latent_dim, dtype=S.dtype)
    b = post.mean @ S_inv
    exponent = 2 * torch.einsum("bi,ij,bj->b", b, torch.linalg.inv(A), b) - (b * post.mean).sum(-1)
    return (exponent.exp() / torch.det(S) / torch.det(A).sqrt()).mean().item()


@pytest.mark.statistical
def test_decoder_that_ignores_z_gives_no_active_units_and_no_information() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.bernoulli(torch.rand(1, 20, generator=gen).expand(600, 20), generator=gen)
    model = IgnoresZ(20, 3)
    family = make_family("mean-field", 3)
    posterior = AmortizedPosterior(mlp_encoder(20, [16], family.param_size), family)
    fit(model, posterior, Dataset(x), epochs=40, batch_size=50, lr=1e-2, generator=gen)

    d = collapse_diagnostics(model, posterior, x, batch_size=600)
    assert d.active_units == 0 == active_units(posterior, x)
    assert (d.kl_per_dim < 0.01).all()
    terms = batch_mutual_information(posterior(x))
    se = terms.std().item() / math.sqrt(x.shape[0])
    # 0 <= I(x; z) <= E_x KL(q(z|x) || p(z)) (the KL's mean is I plus KL(q(z) || p(z))); the
    # estimate is that up to 4 standard errors of its mean over points.
    assert -4 * se <= d.mutual_information <= d.kl_per_dim.sum().item() + 4 * se


@pytest.mark.statistical
def test_ppca_exact_posterior_has_every_unit_active_and_the_closed_form_information(ppca: LinearGaussian) -> None:
    x, _ = ppca.sample(10_000, torch.Generator().manual_seed(1))
    posterior = ExactPosterior(ppca)
    batch = 2000
    d = collapse_diagnostics(ppca, posterior, x, batch_size=batch)
    assert d.active_units == ppca.latent_dim
    # Cov_x(E[z|x]) = I - M^-1 (law of total variance), M = I + W^T Psi^-1 W.
    W, psi = ppca.W, ppca.noise_var
    M = torch.eye(2, dtype=W.dtype) + W.T @ (W / psi[:, None])
    torch.testing.assert_close(d.mean_variance, torch.diagonal(torch.eye(2, dtype=W.dtype) - torch.linalg.inv(M)), atol=0.05, rtol=0)

    truth = _closed_form_mi(ppca)
    torch.manual_seed(7)
    terms = torch.cat([batch_mutual_information(posterior(x[s : s + batch])) for s in range(0, 10_000, batch)])
    estimate = terms.mean().item()
    # Bias. Each term is log q(z_i|x_i) - log S_i - log q(z_i) with S_i = (1/B) sum_j
    # q(z_i|x_j) / q(z_i), q(z) = p(z) here. In expectation the estimate is the InfoNCE bound,
    # so E[log S_i] >= 0; and by Jensen, since E[S_i | x_i, z_i] = (r_i + B - 1) / B with
    # r = p(z|x) / p(z), E[log S_i] <= log(1 + (E[r] - 1) / B). So
    #   I - log(1 + (E[r] - 1) / B) <= E[estimate] <= I.
    # Noise: 4 standard errors of the mean of the terms (terms of one batch share the mixture,
    # a correlation of order 1/B, ignored).
    bias = math.log1p((_expected_density_ratio(ppca, x) - 1) / batch)
    se = terms.std().item() / math.sqrt(terms.numel())
    assert bias < 0.03 and se < 0.02  # the test is sharp enough to mean something
    assert truth - bias - 4 * se <= estimate <= truth + 4 * se
    assert truth - bias - 4 * se <= mutual_information(posterior, x, batch_size=batch) <= truth + 4 * se


def test_small_batches_cap_the_estimate_at_log_batch_size(ppca: LinearGaussian) -> None:
    x, _ = ppca.sample(2000, torch.Generator().manual_seed(2))
    posterior = ExactPosterior(ppca)
    # With B = 2 the mixture's own component alone gives log q(z_i) >= log q(z_i|x_i) - log 2.
    assert mutual_information(posterior, x, batch_size=2) < math.log(2) + 0.15
    assert mutual_information(posterior, x, batch_size=2) < mutual_information(posterior, x, batch_size=500)


@pytest.mark.parametrize("name", ["mean-field", "full-rank"])
def test_dimension_kl_is_the_exact_marginal_kl(name: str, ppca: LinearGaussian, ppca_x: Tensor) -> None:
    post = ppca.exact_posterior(ppca_x)
    q = make_family(name, 2)(make_family(name, 2).params_of(post) if name == "full-rank" else torch.cat(
        [post.mean, torch.log(torch.expm1(post.stddev))], -1))  # fmt: skip
    kl = dimension_kl(q, ppca.prior())
    assert kl.shape == (50, 2)
    m, v = q.mean, q.variance
    torch.testing.assert_close(kl, 0.5 * (v + m**2 - 1 - v.log()))
    if name == "mean-field":  # a product: the marginal KLs add up to the KL
        torch.testing.assert_close(kl.sum(-1), prior_kl(q))


@pytest.mark.statistical
def test_dimension_kl_of_other_distributions_matches_their_gaussian_marginals(ppca: LinearGaussian) -> None:
    loc = torch.tensor([[0.5, -1.0], [0.0, 2.0]], dtype=torch.float64)
    factor = torch.tensor([[[1.0], [0.5]], [[0.2], [0.1]]], dtype=torch.float64)
    q = LowRankMultivariateNormal(loc, factor, torch.full((2, 2), 0.3, dtype=torch.float64))
    kl = dimension_kl(q, ppca.prior(), num_samples=100_000)
    v = q.variance
    exact = 0.5 * (v + loc**2 - 1 - v.log())
    # Moment-matched from S samples: the sample variance has relative sd sqrt(2/S) = 0.0045 and
    # the mean sd sqrt(v/S); the KL moves by about (1 - 1/v) v / 2 * 0.0045 + |m| sqrt(v/S) < 0.01.
    torch.testing.assert_close(kl, exact, atol=0.02, rtol=0)


def test_dimension_kl_needs_a_factorised_prior(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    with pytest.raises(ConfigError, match="prior"):
        dimension_kl(ppca.exact_posterior(ppca_x), ppca.exact_posterior(ppca_x))


def test_diagnostics_see_the_posterior_in_evaluation_mode(ppca: LinearGaussian) -> None:
    """A denoising encoder left in training mode (as during training, where the diagnostics run
    after every epoch): its input noise is off for the diagnostics. For 200 copies of one point
    every posterior mean is the same, so no unit is active; with the noise on, Cov_x of the means
    would be about sigma^2 times the encoder's squared gain per dimension."""
    family = make_family("mean-field", 2)
    posterior = AmortizedPosterior(DenoisingEncoder(mlp_encoder(5, (8,), family.param_size), 1.0), family).double()
    assert posterior.training
    x = torch.randn(1, 5, dtype=torch.float64).expand(200, 5)
    diagnostics = collapse_diagnostics(ppca, posterior, x)
    assert diagnostics.active_units == 0 and active_units(posterior, x) == 0
    # Zero up to float64 rounding: the copies' means can differ in the last bit (~1e-16; on some
    # CPUs a batch's rows take different SIMD paths), a variance of ~1e-32, against order 1 with
    # the noise on.
    zeros = torch.zeros(2, dtype=torch.float64)
    torch.testing.assert_close(diagnostics.mean_variance, zeros, atol=1e-24, rtol=0)
    torch.testing.assert_close(posterior_mean_variance(posterior, x), zeros, atol=1e-24, rtol=0)
    assert posterior.training  # the caller's mode is restored
    torch.manual_seed(0)
    in_training_mode = mutual_information(posterior, x)
    posterior.eval()
    torch.manual_seed(0)
    assert mutual_information(posterior, x) == in_training_mode  # the same draws, the same q


def test_a_categorical_latent_is_one_unit() -> None:
    # N = 3 categorical latents of C = 10 classes: q.mean is (B, 3, 10), the one-hot class
    # probabilities; a latent's activity is the trace over its classes, so at most 3 units.
    n, latents, classes = 200, 3, 10
    logits = torch.zeros(n, latents, classes, dtype=torch.float64)
    logits[:, 0] = 3 * torch.randn(n, classes, dtype=torch.float64)  # only latent 0 depends on x
    posterior = LocalPosterior(n, CategoricalFamily(latents, classes), initial=logits.reshape(n, -1))
    x = torch.zeros(n, 4, dtype=torch.float64)
    probabilities = torch.softmax(logits[:, 0], -1)
    expected = torch.zeros(latents, dtype=torch.float64)
    expected[0] = probabilities.var(0).sum()
    torch.testing.assert_close(posterior_mean_variance(posterior, x), expected)
    model = CategoricalVAE(4, latents, classes, [8], "relu").double()
    diagnostics = collapse_diagnostics(model, posterior, x)
    assert diagnostics.mean_variance.shape == (latents,) and diagnostics.kl_per_dim.shape == (latents,)
    assert diagnostics.active_units == 1 and active_units(posterior, x) == 1


def test_mutual_information_on_the_first_points_only(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # mi_points: KL and active units over all points, the MI estimate over the first batch alone
    # (a flow's estimate would otherwise cost batch_size densities of a pass per latent dimension)
    from avi.families.flow import FlowFamily
    from avi.runs.collapse import FLOW_MI_BATCH_SIZE, mi_settings

    family = make_family("mean-field", 2)
    posterior = AmortizedPosterior(mlp_encoder(5, (8,), family.param_size), family).double()
    torch.manual_seed(3)
    full = collapse_diagnostics(ppca, posterior, ppca_x, batch_size=20)
    torch.manual_seed(3)
    first = collapse_diagnostics(ppca, posterior, ppca_x, batch_size=20, mi_points=20)
    torch.manual_seed(3)
    expected = batch_mutual_information(posterior(ppca_x[:20])).mean().item()
    assert first.mutual_information == pytest.approx(expected, rel=1e-12)
    assert first.mutual_information != full.mutual_information
    torch.testing.assert_close(first.kl_per_dim, full.kl_per_dim)
    assert first.active_units == full.active_units
    assert mi_settings(posterior) == {"batch_size": 500}
    flow = AmortizedPosterior(mlp_encoder(5, (8,), 4), FlowFamily(2, "nsf", context_size=4))
    assert mi_settings(flow) == {"batch_size": FLOW_MI_BATCH_SIZE, "mi_points": FLOW_MI_BATCH_SIZE}
