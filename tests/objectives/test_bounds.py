"""ELBO and IWAE estimators against the closed forms of a PPCA model (float64).

Replicates: a q with batch (R,) whose rows are one parameter vector repeated gives R independent
estimates in one call, so the Monte Carlo standard error comes from the same run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, kl_divergence

from avi.errors import ConfigError
from avi.families import make_family
from avi.models import LinearGaussian, VAEModel
from avi.objectives import ELBO, IWAE, elbo, elbo_terms, iwae_bound, iwae_terms, objective_named
from tests.closed_forms import linear_gaussian_elbo, prior_kl

FAMILIES = ["mean-field", "full-rank"]


def _off_posterior_params(
    name: str, ppca: LinearGaussian, x: Tensor, shift: float = 0.7, stretch: float = 1.6
) -> Tensor:
    """lambda of a q near the exact posterior but wrong: mean shifted, scales stretched; (B, P)."""
    post = ppca.exact_posterior(x)
    family = make_family(name, ppca.latent_dim)
    sd = post.stddev
    if name == "mean-field":
        return torch.cat([post.mean + shift * sd, torch.log(torch.expm1(stretch * sd))], -1)
    S = post.covariance_matrix * stretch**2
    return family.params_of(MultivariateNormal(post.mean + shift * sd, covariance_matrix=S))


def _replicate(params: Tensor, x: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """Rows repeated r times, replicate-major: (r * B, P) and (r * B, D)."""
    return params.repeat(r, 1), x.repeat(r, 1)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("analytic_kl", [False, True])
def test_elbo_terms_decompose(
    ppca: LinearGaussian, ppca_x: Tensor, name: str, analytic_kl: bool
) -> None:
    q = make_family(name, 2)(_off_posterior_params(name, ppca, ppca_x))
    terms = elbo_terms(ppca, q, ppca_x, num_samples=3, analytic_kl=analytic_kl)
    assert terms.value.shape == (50,)
    torch.testing.assert_close(terms.value, terms.reconstruction - terms.kl)


@pytest.mark.parametrize("name", FAMILIES)
def test_analytic_kl_term_is_exact(ppca: LinearGaussian, ppca_x: Tensor, name: str) -> None:
    q = make_family(name, 2)(_off_posterior_params(name, ppca, ppca_x))
    terms = elbo_terms(ppca, q, ppca_x, analytic_kl=True)
    torch.testing.assert_close(terms.kl, prior_kl(q), rtol=1e-12, atol=1e-12)


def test_estimators_have_zero_variance_at_the_exact_posterior(
    ppca: LinearGaussian, ppca_x: Tensor
) -> None:
    # q = p(z|x) makes every weight p(x, z) / q(z) equal to p(x)
    post = ppca.exact_posterior(ppca_x)
    exact = ppca.exact_log_marginal(ppca_x)
    torch.testing.assert_close(
        elbo(ppca, post, ppca_x, num_samples=3), exact, rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(iwae_bound(ppca, post, ppca_x, k=4), exact, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", FAMILIES)
def test_closed_form_elbo_is_log_marginal_minus_posterior_kl(
    ppca: LinearGaussian, ppca_x: Tensor, name: str
) -> None:
    # ELBO(q) = log p(x) - KL(q || p(z|x)) <= log p(x), with equality only at q = p(z|x).
    # Checked for 20 random q per point; the library estimators are then tied to this closed
    # form by test_elbo_estimators_are_unbiased.
    family = make_family(name, 2)
    x = ppca_x.repeat(20, 1)
    q = family(torch.randn(x.shape[0], family.param_size, dtype=torch.float64))
    closed = linear_gaussian_elbo(ppca, q, x)
    exact = ppca.exact_log_marginal(x)
    post = ppca.exact_posterior(x)
    q_full = (
        MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))
        if name == "mean-field"
        else q
    )
    torch.testing.assert_close(closed, exact - kl_divergence(q_full, post), rtol=1e-10, atol=1e-10)
    assert (closed < exact).all()


@pytest.mark.statistical
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("analytic_kl", [False, True])
def test_elbo_estimators_are_unbiased(
    ppca: LinearGaussian, ppca_x: Tensor, name: str, analytic_kl: bool
) -> None:
    # R = 20,000 independent single-sample estimates per point: their mean has standard error
    # sd / sqrt(R) (sd from the same draws). Six points at 4 standard errors each: false-alarm
    # probability below 6 * 6.3e-5. Every estimate's mean must also lie below log p(x).
    x = ppca_x[:6]
    family = make_family(name, 2)
    params = _off_posterior_params(name, ppca, x)
    r = 20_000
    params_r, x_r = _replicate(params, x, r)
    estimates = elbo(ppca, family(params_r), x_r, analytic_kl=analytic_kl).reshape(r, 6)
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(r)
    closed = linear_gaussian_elbo(ppca, family(params), x)
    assert ((mean - closed).abs() < 4 * se).all()
    assert (mean < ppca.exact_log_marginal(x) + 4 * se).all()
    # power: an error of 10% of the gap log p(x) - ELBO (4 to 11 nats here) would show
    assert (4 * se < 0.1 * (ppca.exact_log_marginal(x) - closed)).all()


def test_more_samples_average_single_sample_estimates(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # elbo with S samples is the mean of S single-sample estimates drawn from the same stream
    q = make_family("full-rank", 2)(_off_posterior_params("full-rank", ppca, ppca_x))
    torch.manual_seed(5)
    z = q.rsample((4,))
    expected = (ppca.log_joint(ppca_x, z) - q.log_prob(z)).mean(0)
    torch.manual_seed(5)
    torch.testing.assert_close(elbo(ppca, q, ppca_x, num_samples=4), expected)


def test_iwae_with_one_sample_is_the_elbo_estimator(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # same seed, same draw: the k = 1 bound and the single-sample ELBO (estimator A) coincide
    q = make_family("full-rank", 2)(_off_posterior_params("full-rank", ppca, ppca_x))
    torch.manual_seed(7)
    iwae = iwae_terms(ppca, q, ppca_x, k=1)
    torch.manual_seed(7)
    single = elbo_terms(ppca, q, ppca_x, num_samples=1, analytic_kl=False)
    torch.testing.assert_close(iwae.value, single.value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(iwae.reconstruction, single.reconstruction)
    torch.testing.assert_close(iwae.kl, single.kl)


def test_iwae_is_at_least_the_elbo_of_its_own_samples(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # log mean exp(log w) >= mean(log w) for every draw (Jensen), and the terms are the ELBO's
    q = make_family("mean-field", 2)(_off_posterior_params("mean-field", ppca, ppca_x))
    terms = iwae_terms(ppca, q, ppca_x, k=10)
    assert (terms.value >= terms.reconstruction - terms.kl - 1e-12).all()
    assert (terms.value > terms.reconstruction - terms.kl + 1e-3).any()


@pytest.mark.statistical
def test_iwae_increases_with_k_towards_log_marginal(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # ELBO = E[L_1] <= E[L_2] <= E[L_3] <= E[L_4] <= E[L_10] <= E[L_50] <= log p(x) (Burda et al.
    # 2016, Theorem 1) for one point and a q with its mean off by 0.5 sd and scales 1.3x (a
    # 2-nat ELBO gap, and E[L_50] about 0.05 nats below log p(x), 20 standard errors, so the
    # last inequality is tested too). Each E[L_k] is estimated from R = 20,000
    # independent replicates: standard error sd_k / sqrt(R); a difference of two independent
    # means has standard error sqrt(se_a^2 + se_b^2). We ask for strict increase by more than 3
    # standard errors (false pass of a wrong ordering, or false alarm, below 0.14% per pair).
    x = ppca_x[:1]
    family = make_family("full-rank", 2)
    params = _off_posterior_params("full-rank", ppca, x, shift=0.5, stretch=1.3)
    r = 20_000
    q = family(params.expand(r, -1))
    x_r = x.expand(r, -1)
    ks = [1, 2, 3, 4, 10, 50]
    means, ses = [], []
    for k in ks:
        values = iwae_bound(ppca, q, x_r, k=k)
        means.append(values.mean())
        ses.append(values.std() / math.sqrt(r))
    closed = linear_gaussian_elbo(ppca, family(params), x)[0]
    assert abs(means[0] - closed) < 4 * ses[0]
    for i in range(len(ks) - 1):
        assert means[i + 1] - means[i] > 3 * math.hypot(ses[i], ses[i + 1]), (ks[i], ks[i + 1])
    log_px = ppca.exact_log_marginal(x)[0]
    assert means[-1] < log_px + 3 * ses[-1]


@pytest.mark.parametrize(
    "call",
    [
        lambda m, q, x: elbo(m, q, x, num_samples=0),
        lambda m, q, x: iwae_bound(m, q, x, k=0),
    ],
)
def test_sample_counts_must_be_positive(
    ppca: LinearGaussian, ppca_x: Tensor, call: Callable[..., Tensor]
) -> None:
    q = ppca.exact_posterior(ppca_x)
    with pytest.raises(ConfigError, match="positive integer"):
        call(ppca, q, ppca_x)


def test_objective_values(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    q = make_family("full-rank", 2)(_off_posterior_params("full-rank", ppca, ppca_x))
    torch.manual_seed(3)
    a = IWAE(k=6)(ppca, q, ppca_x)
    torch.manual_seed(3)
    torch.testing.assert_close(a.value, iwae_bound(ppca, q, ppca_x, k=6))
    # the default ELBO objective uses the analytic KL
    torch.testing.assert_close(ELBO()(ppca, q, ppca_x).kl, prior_kl(q))
    assert objective_named("iwae", k=6, num_samples=3) == IWAE(k=6)  # settings it lacks are ignored
    with pytest.raises(ConfigError, match="unknown objective"):
        objective_named("magic")


def _small_vae() -> VAEModel:
    return VAEModel(3, 2, hidden=(4,), activation="tanh").double().requires_grad_(False)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize(
    "objective",
    [
        lambda m, q, x: elbo(m, q, x, num_samples=3),
        lambda m, q, x: elbo(m, q, x, num_samples=3, analytic_kl=True),
        lambda m, q, x: iwae_bound(m, q, x, k=3),
    ],
    ids=["elbo", "elbo-analytic-kl", "iwae"],
)
@pytest.mark.parametrize("model_name", ["ppca", "vae"])
def test_reparameterised_gradients_pass_gradcheck(
    name: str, objective: Callable[..., Tensor], model_name: str, ppca: LinearGaussian
) -> None:
    # Fixed noise: re-seeding inside the function makes every call draw the same eps, so the
    # estimator is a smooth deterministic function of lambda that finite differences can check.
    model = ppca if model_name == "ppca" else _small_vae()
    x = torch.randn(2, model.data_dim, dtype=torch.float64)
    if model_name == "vae":
        x = (x > 0).double()
    family = make_family(name, 2)
    params = (0.5 * torch.randn(2, family.param_size, dtype=torch.float64)).requires_grad_(True)

    def fixed_noise_objective(p: Tensor) -> Tensor:
        torch.manual_seed(11)
        return objective(model, family(p), x)

    assert torch.autograd.gradcheck(fixed_noise_objective, (params,))


@pytest.mark.statistical
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("analytic_kl", [False, True])
def test_monte_carlo_gradient_is_unbiased(
    ppca: LinearGaussian, ppca_x: Tensor, name: str, analytic_kl: bool
) -> None:
    # The gradient of the closed-form ELBO is the target. Replicating one lambda in R rows and
    # differentiating the sum gives R independent single-sample gradients (row r only feeds
    # estimate r); each coordinate of their mean has standard error sd / sqrt(R). With up to 5
    # coordinates at 4 standard errors: false-alarm probability below 5 * 6.3e-5.
    x = ppca_x[:1]
    family = make_family(name, 2)
    params = _off_posterior_params(name, ppca, x)
    exact = torch.autograd.grad(
        linear_gaussian_elbo(ppca, family(params.requires_grad_(True)), x).sum(), params
    )[0][0]
    r = 20_000
    params_r = params.detach().repeat(r, 1).requires_grad_(True)
    value = elbo(ppca, family(params_r), x.expand(r, -1), analytic_kl=analytic_kl).sum()
    grads = torch.autograd.grad(value, params_r)[0]
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(r)
    assert ((mean - exact).abs() < 4 * se + 1e-12).all(), (mean, exact, se)
    assert exact.abs().max() > 20 * se.max()  # the gradient is far from 0: the test has power
