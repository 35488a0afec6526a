"""The VR bound (Li and Turner 2016) against the ELBO and IWAE estimators on the same draws (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from avi.errors import ConfigError
from avi.families import make_family
from avi.models import LinearGaussian
from avi.objectives import Renyi, elbo_terms, iwae_terms, log_power_mean, renyi_bound, renyi_terms
from tests.objectives.common import grads

FAMILY = make_family("full-rank", 2)


def test_alpha_one_value_and_gradient_are_the_elbos(
    trainable_ppca: LinearGaussian, ppca_x: Tensor, off_params: Tensor
) -> None:
    # Same seed, same k draws: the alpha = 1 limit is mean_i log w_i, the ELBO estimate with k
    # samples and Monte Carlo KL (estimator A); gradients for lambda and the model agree.
    params = off_params.clone().requires_grad_(True)
    inputs = [params, *trainable_ppca.parameters()]
    torch.manual_seed(3)
    renyi = renyi_terms(trainable_ppca, FAMILY(params), ppca_x, alpha=1.0, k=7)
    torch.manual_seed(3)
    elbo = elbo_terms(trainable_ppca, FAMILY(params), ppca_x, num_samples=7, analytic_kl=False)
    torch.testing.assert_close(renyi.value, elbo.value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(renyi.reconstruction, elbo.reconstruction)
    torch.testing.assert_close(renyi.kl, elbo.kl)
    for a, b in zip(grads(renyi.value, inputs), grads(elbo.value, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_alpha_near_one_is_continuous(ppca: LinearGaussian, ppca_x: Tensor, off_params: Tensor) -> None:
    # With r = 1 - alpha, L_alpha = mean(log w) + r m2 / 2 + O(r^2), m2 the (1/k) variance of the
    # draw's log-weights: at r = +-1e-6 the first-order term is checked to 1e-8 (the r^2 term is
    # about 1e-12 * m3 / 6, the rounding error about 1e-16 * log k / r).
    from avi.objectives import log_weights

    q = FAMILY(off_params)
    torch.manual_seed(4)
    log_lik, log_prior, log_q = log_weights(ppca, q, ppca_x, 10)
    log_w = log_lik + log_prior - log_q
    values = {}
    for alpha in (1 - 1e-6, 1.0, 1 + 1e-6):
        torch.manual_seed(4)
        values[alpha] = renyi_bound(ppca, q, ppca_x, alpha=alpha, k=10)
    torch.testing.assert_close(values[1.0], log_w.mean(0))
    m2 = log_w.var(0, unbiased=False)
    for alpha in (1 - 1e-6, 1 + 1e-6):
        torch.testing.assert_close(values[alpha] - values[1.0], (1 - alpha) * m2 / 2, rtol=0, atol=1e-8)


def test_alpha_zero_is_the_iwae_bound_of_the_same_samples(
    trainable_ppca: LinearGaussian, ppca_x: Tensor, off_params: Tensor
) -> None:
    params = off_params.clone().requires_grad_(True)
    inputs = [params, *trainable_ppca.parameters()]
    torch.manual_seed(5)
    renyi = renyi_terms(trainable_ppca, FAMILY(params), ppca_x, alpha=0.0, k=6)
    torch.manual_seed(5)
    iwae = iwae_terms(trainable_ppca, FAMILY(params), ppca_x, k=6)
    torch.testing.assert_close(renyi.value, iwae.value, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads(renyi.value, inputs), grads(iwae.value, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_bound_decreases_as_alpha_increases(ppca: LinearGaussian, ppca_x: Tensor, off_params: Tensor) -> None:
    # On one fixed draw L_alpha = log M_{1-alpha}(w), and power means increase with their order
    # (strictly unless all weights are equal), so the bound decreases in alpha point by point.
    q = FAMILY(off_params)
    alphas = [-2.0, -0.5, 0.0, 0.3, 0.5, 0.9, 1.0, 1.5, 3.0]
    values = []
    for alpha in alphas:
        torch.manual_seed(6)
        values.append(renyi_bound(ppca, q, ppca_x, alpha=alpha, k=8))
    for a, b, lo, hi in zip(alphas, alphas[1:], values, values[1:]):
        assert (hi < lo).all(), (a, b)


def test_log_power_mean_matches_the_definition() -> None:
    log_w = torch.randn(9, 4, dtype=torch.float64) * 3
    for order in (-1.5, 0.5, 2.0):
        direct = torch.log(torch.exp(order * log_w).mean(0)) / order
        torch.testing.assert_close(log_power_mean(log_w, order), direct)
    torch.testing.assert_close(log_power_mean(log_w, 0.0), log_w.mean(0))


@pytest.mark.statistical
def test_expected_bound_lies_between_the_elbo_and_log_marginal(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # E[L_0.5,5] over R = 20,000 replicates of one point: standard error sd / sqrt(R). It must
    # exceed the closed-form ELBO (E[L_1,k] = ELBO) and lie below log p(x) (E[L_0,k] <= log p(x)
    # and L_0.5 <= L_0 draw by draw), both by more than 4 standard errors (false alarm < 6.3e-5).
    from tests.closed_forms import linear_gaussian_elbo
    from tests.objectives.common import off_posterior_params

    x = ppca_x[:1]
    params = off_posterior_params(ppca, x, shift=0.5, stretch=1.3)
    r = 20_000
    values = renyi_bound(ppca, FAMILY(params.expand(r, -1)), x.expand(r, -1), alpha=0.5, k=5)
    mean, se = values.mean(), values.std() / math.sqrt(r)
    assert mean - linear_gaussian_elbo(ppca, FAMILY(params), x)[0] > 4 * se
    assert ppca.exact_log_marginal(x)[0] - mean > 4 * se


def test_fixed_noise_gradient_passes_gradcheck(ppca: LinearGaussian) -> None:
    x = torch.randn(2, 5, dtype=torch.float64)
    params = (0.5 * torch.randn(2, FAMILY.param_size, dtype=torch.float64)).requires_grad_(True)

    def fixed_noise(p: Tensor) -> Tensor:
        torch.manual_seed(11)
        return renyi_bound(ppca, FAMILY(p), x, alpha=0.5, k=3)

    assert torch.autograd.gradcheck(fixed_noise, (params,))


@pytest.mark.parametrize("alpha", [math.nan, math.inf, -math.inf])
def test_unusable_alpha_is_a_config_error(ppca: LinearGaussian, ppca_x: Tensor, alpha: float) -> None:
    with pytest.raises(ConfigError, match="alpha must be a finite number"):
        Renyi(alpha=alpha)
    with pytest.raises(ConfigError, match="alpha must be a finite number"):
        renyi_bound(ppca, ppca.exact_posterior(ppca_x), ppca_x, alpha=alpha, k=2)
