"""The annealed free energy (Rezende and Mohamed 2015): value = beta * ELBO + (1 - beta) * H[q],
against the closed form of a Gaussian q under PPCA (float64), from both of its estimators; the
true ELBO terms kept; a flow's value from its own samples; and what it refuses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from avi.errors import ConfigError
from avi.families.planar import PlanarFamily
from avi.models import LinearGaussian
from avi.objectives import ELBO, IWAE, Tempered, elbo_terms, log_weights
from tests.closed_forms import linear_gaussian_elbo


def _mean_field(ppca: LinearGaussian, x: Tensor) -> Independent:
    """A mean-field q off the exact posterior: its marginals, shifted and widened."""
    post = ppca.exact_posterior(x)
    return Independent(Normal(post.mean + torch.tensor([0.4, -0.2], dtype=x.dtype), 1.5 * post.stddev), 1)


@pytest.mark.statistical
@pytest.mark.parametrize("analytic_kl", [True, False], ids=["closed-form-kl-and-entropy", "samples"])
def test_the_value_is_beta_times_the_elbo_plus_the_rest_of_the_entropy(
    ppca: LinearGaussian, ppca_x: Tensor, analytic_kl: bool
) -> None:
    """E[value] = beta * ELBO + (1 - beta) * H[q], exactly known for PPCA; S = 2,000 samples a
    point, so each point's estimate is off by a few Monte Carlo standard errors at most."""
    q, beta, samples = _mean_field(ppca, ppca_x), 0.3, 2000
    exact = beta * linear_gaussian_elbo(ppca, q, ppca_x) + (1 - beta) * q.entropy()
    torch.manual_seed(0)
    estimates = torch.stack([Tempered(ELBO(analytic_kl=analytic_kl), inverse_temperature=beta)(ppca, q, ppca_x).value
                             for _ in range(samples)])  # fmt: skip
    stderr = estimates.std(0) / math.sqrt(samples)
    assert ((estimates.mean(0) - exact).abs() < 4.5 * stderr).all()  # 50 points: a chance of 3e-4 that one is not


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_it_keeps_the_true_terms_and_is_the_elbo_at_beta_one(
    ppca: LinearGaussian, ppca_x: Tensor, analytic_kl: bool
) -> None:
    q = _mean_field(ppca, ppca_x)
    torch.manual_seed(1)
    plain = elbo_terms(ppca, q, ppca_x, num_samples=3, analytic_kl=analytic_kl)
    for beta in (1.0, 0.25):
        torch.manual_seed(1)
        terms = Tempered(ELBO(num_samples=3, analytic_kl=analytic_kl), inverse_temperature=beta)(ppca, q, ppca_x)
        torch.testing.assert_close(terms.reconstruction, plain.reconstruction)
        torch.testing.assert_close(terms.kl, plain.kl)
        if beta == 1.0:
            torch.testing.assert_close(terms.value, plain.value)
        else:  # the tempered value differs from the ELBO by (1 - beta) (H - ELBO), not 0
            assert not torch.allclose(terms.value, plain.value)


def test_a_flows_value_comes_from_its_own_samples(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    """A planar q has no closed-form KL or entropy: mean_s [beta log p(x, z_s) - log q(z_s)]."""
    family = PlanarFamily(2, flows=3)
    torch.manual_seed(2)
    q = family(0.3 * torch.randn(ppca_x.shape[0], family.param_size, dtype=torch.float64))
    beta = 0.1
    torch.manual_seed(3)
    log_lik, log_prior, log_q = log_weights(ppca, q, ppca_x, 5)
    torch.manual_seed(3)
    terms = Tempered(ELBO(num_samples=5), inverse_temperature=beta)(ppca, q, ppca_x)
    torch.testing.assert_close(terms.value, (beta * (log_lik + log_prior) - log_q).mean(0))
    torch.testing.assert_close(terms.kl, (log_q - log_prior).mean(0))


def test_it_refuses_other_objectives_and_temperatures() -> None:
    with pytest.raises(ConfigError, match="anneals the ELBO, not objective 'iwae'"):
        Tempered(IWAE(k=5))
    with pytest.raises(ConfigError, match="anneals the reparameterised ELBO, not estimator 'score'"):
        Tempered(ELBO(estimator="score"))
    for beta in (-0.1, 1.5, math.nan):
        with pytest.raises(ConfigError, match="inverse temperature must be in"):
            Tempered(ELBO(), inverse_temperature=beta)
