"""CUBO (Dieng et al. 2017) on PPCA: the closed form, the sandwich, the training surrogate (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families import make_family
from avi.models import LinearGaussian
from avi.objectives import CUBO, cubo, cubo_terms, elbo, elbo_terms, iwae_bound
from tests.closed_forms import gaussian_moments
from tests.objectives.common import grads, off_posterior_params

FAMILY = make_family("full-rank", 2)


def gaussian_cubo(model: LinearGaussian, q: Distribution, x: Tensor, n: float) -> Tensor:
    """CUBO_n = log p(x) + (1/n) log int p(z|x)^n q(z)^(1-n) dz in closed form, (B,).

    For Gaussians p = N(a, A) (the posterior) and q = N(b, B), with C = n B + (1 - n) A
    (positive definite, else the bound is infinite) and d = a - b,
    log int p^n q^(1-n) = (n - 1) [n/2 d^T C^-1 d - (log det C - (1 - n) log det A - n log det B) / (2 (n - 1))],
    that is (n - 1) times the Renyi divergence D_n(p || q) (Gil, Alajaji and Linder 2013).
    """
    post = model.exact_posterior(x)
    a, A = post.mean, post.covariance_matrix
    b, B = gaussian_moments(q)
    C = n * B + (1 - n) * A
    d = (a - b).unsqueeze(-1)
    quad = (d.mT @ torch.linalg.solve(C, d)).squeeze(-1).squeeze(-1)
    log_integral = (n - 1) * n / 2 * quad - (torch.logdet(C) - (1 - n) * torch.logdet(A) - n * torch.logdet(B)) / 2
    return model.exact_log_marginal(x) + log_integral / n


@pytest.mark.statistical
@pytest.mark.parametrize("n", [2.0, 3.0])
def test_exponentiated_single_sample_estimate_is_unbiased_for_the_closed_form(
    ppca: LinearGaussian, ppca_x: Tensor, n: float
) -> None:
    # exp(n CUBO_n,1) = w^n is unbiased for exp(n CUBO_n) = E_q[w^n]. Divided by p(x)^n, over
    # R = 40,000 replicates per point its mean has standard error sd / sqrt(R); the sample sd is
    # reliable because E[w^(4n)] is finite (4n B - (4n - 1) A > 0 for B = 1.69 A). Six points at
    # 4 standard errors: false-alarm probability below 6 * 6.3e-5.
    x = ppca_x[:6]
    params = off_posterior_params(ppca, x, shift=0.5, stretch=1.3)
    r = 40_000
    estimates = cubo(ppca, FAMILY(params.repeat(r, 1)), x.repeat(r, 1), n=n, k=1).reshape(r, 6)
    ratios = torch.exp(n * (estimates - ppca.exact_log_marginal(x)))
    mean, se = ratios.mean(0), ratios.std(0) / math.sqrt(r)
    closed = torch.exp(n * (gaussian_cubo(ppca, FAMILY(params), x, n) - ppca.exact_log_marginal(x)))
    assert ((mean - closed).abs() < 4 * se).all(), (mean, closed, se)
    assert (closed - 1 > 20 * se).all()  # the bound is far from log p(x): the test has power


@pytest.mark.statistical
def test_sandwich_elbo_below_log_marginal_below_cubo(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # With k = 10 samples per estimate (the stated number; k = 1 would give the ELBO, and the
    # estimate is biased low), q's mean off by 0.5 sd and its covariance 1.69 times the
    # posterior's (log p(x) - ELBO = 2.0 nats, CUBO_2 - log p(x) = 0.87, E[CUBO_2,10] - log p(x)
    # about 0.37): over R = 2,000 replicates per point, E[ELBO] < log p(x) < E[CUBO_2,10], each
    # by more than 4 standard errors sd / sqrt(R). Six points: false alarm below 12 * 6.3e-5.
    x = ppca_x[:6]
    params = off_posterior_params(ppca, x, shift=0.5, stretch=1.3)
    r = 2_000
    q, x_r = FAMILY(params.repeat(r, 1)), x.repeat(r, 1)
    log_px = ppca.exact_log_marginal(x)
    for values, sign in ((elbo(ppca, q, x_r, num_samples=10), -1), (cubo(ppca, q, x_r, n=2.0, k=10), 1)):
        values = values.reshape(r, 6)
        mean, se = values.mean(0), values.std(0) / math.sqrt(r)
        assert (sign * (mean - log_px) > 4 * se).all(), (sign, mean - log_px, se)
    assert (gaussian_cubo(ppca, FAMILY(params), x, 2.0) > log_px).all()


def test_one_sample_is_the_elbo_and_the_bound_grows_with_n(
    ppca: LinearGaussian, ppca_x: Tensor, off_params: Tensor
) -> None:
    # On one draw: k = 1 gives log w, the ELBO estimate; log M_n(w) grows with n, and exceeds
    # the IWAE bound (order 1) of the same draw.
    q = FAMILY(off_params)
    torch.manual_seed(2)
    single = cubo(ppca, q, ppca_x, k=1)
    torch.manual_seed(2)
    torch.testing.assert_close(single, elbo_terms(ppca, q, ppca_x, analytic_kl=False).value)
    values = []
    for n in (1.5, 2.0, 4.0):
        torch.manual_seed(3)
        values.append(cubo(ppca, q, ppca_x, n=n, k=8))
    torch.manual_seed(3)
    iwae = iwae_bound(ppca, q, ppca_x, k=8)
    assert (values[0] > iwae).all() and (values[1] > values[0]).all() and (values[2] > values[1]).all()


def test_exact_posterior_makes_the_bound_tight(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # q = p(z|x): every weight is p(x), so CUBO_n,k = log p(x) for every draw.
    torch.testing.assert_close(cubo(ppca, ppca.exact_posterior(ppca_x), ppca_x, k=5), ppca.exact_log_marginal(ppca_x))


def test_training_surrogate_minimises_cubo_for_q_and_follows_iwae_for_the_model(
    trainable_ppca: LinearGaussian, ppca_x: Tensor, off_params: Tensor
) -> None:
    # Same seed, same draws: value = -CUBO; d value / d lambda = -d CUBO / d lambda; the model's
    # gradient is the IWAE bound's (the z's do not depend on the model).
    params = off_params.clone().requires_grad_(True)
    model_params = list(trainable_ppca.parameters())
    torch.manual_seed(8)
    terms = cubo_terms(trainable_ppca, FAMILY(params), ppca_x, n=2.0, k=6)
    torch.manual_seed(8)
    upper = cubo(trainable_ppca, FAMILY(params), ppca_x, n=2.0, k=6)
    torch.manual_seed(8)
    iwae = iwae_bound(trainable_ppca, FAMILY(params), ppca_x, k=6)
    torch.testing.assert_close(terms.value, -upper)
    torch.testing.assert_close(grads(terms.value, [params])[0], -grads(upper, [params])[0])
    for a, b in zip(grads(terms.value, model_params), grads(iwae, model_params)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("n", [1.0, 0.5, -2.0, math.nan, math.inf])
def test_order_at_most_one_is_a_config_error(ppca: LinearGaussian, ppca_x: Tensor, n: float) -> None:
    with pytest.raises(ConfigError, match="CUBO order n must be a finite number greater than 1"):
        CUBO(order=n)
    with pytest.raises(ConfigError, match="greater than 1"):
        cubo(ppca, ppca.exact_posterior(ppca_x), ppca_x, n=n, k=2)
