"""The weighted ELBO of the collapse remedies, a wrapper of the ELBO value: value =
reconstruction - w * KL term, the KL term clamped by free bits, the true ELBO terms kept (PPCA,
float64)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from avi.errors import ConfigError
from avi.families import make_family
from avi.models import LinearGaussian
from avi.objectives import ELBO, IWAE, elbo_terms
from avi.objectives.weighted import WeightedKL, free_bits_kl


def _mean_field(ppca: LinearGaussian, x: Tensor, shift: Tensor) -> Independent:
    """A mean-field q: the exact posterior's marginals with means shifted by ``shift`` (K,)."""
    post = ppca.exact_posterior(x)
    return Independent(Normal(post.mean + shift, post.stddev), 1)


@pytest.mark.parametrize("analytic_kl", [True, False])
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0, 2.5])
def test_weight_scales_the_kl_and_keeps_the_true_terms(
    ppca: LinearGaussian, ppca_x: Tensor, weight: float, analytic_kl: bool
) -> None:
    q = _mean_field(ppca, ppca_x, torch.tensor([0.4, -0.2], dtype=torch.float64))
    torch.manual_seed(1)
    plain = elbo_terms(ppca, q, ppca_x, num_samples=3, analytic_kl=analytic_kl)
    torch.manual_seed(1)
    weighted = WeightedKL(ELBO(num_samples=3, analytic_kl=analytic_kl), weight=weight)(ppca, q, ppca_x)
    torch.testing.assert_close(weighted.reconstruction, plain.reconstruction)
    torch.testing.assert_close(weighted.kl, plain.kl)
    torch.testing.assert_close(weighted.value, plain.reconstruction - weight * plain.kl)


def test_free_bits_clamp_each_dimensions_batch_mean_kl() -> None:
    # Batch-mean KLs per dimension: 0.05, 0.5, 2.0; lambda = 0.25 lifts only the first.
    kl = torch.tensor([[0.0, 0.4, 1.0], [0.1, 0.6, 3.0]], dtype=torch.float64, requires_grad=True)
    term = free_bits_kl(kl, 0.25)
    assert term.mean().item() == pytest.approx(0.25 + 0.5 + 2.0)
    term.mean().backward()
    # max(lambda, mean_b KL_bk): no gradient below lambda, 1/B per point above it.
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(free_bits_kl(kl, 0.0), kl.sum(-1))
    assert free_bits_kl(kl, 10.0).mean().item() == pytest.approx(30.0)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_free_bits_objective(ppca: LinearGaussian, ppca_x: Tensor, analytic_kl: bool) -> None:
    # One dimension near the prior (small mean-KL), one far from it.
    q = _mean_field(ppca, ppca_x, torch.tensor([0.0, 3.0], dtype=torch.float64))
    torch.manual_seed(2)
    plain = elbo_terms(ppca, q, ppca_x, num_samples=2, analytic_kl=analytic_kl)
    torch.manual_seed(2)
    objective = WeightedKL(ELBO(num_samples=2, analytic_kl=analytic_kl), weight=0.5, free_bits=1.5)
    terms = objective(ppca, q, ppca_x)
    torch.testing.assert_close(terms.reconstruction, plain.reconstruction)
    torch.testing.assert_close(terms.kl, plain.kl)  # the true KL, whatever the clamp
    prior = ppca.prior().base_dist
    if analytic_kl:
        kl_dims = torch.distributions.kl_divergence(q.base_dist, prior)
    else:  # the per-dimension log ratios of the same samples
        torch.manual_seed(2)
        z = q.rsample((2,))
        kl_dims = (q.base_dist.log_prob(z) - prior.log_prob(z)).mean(0)
    means = kl_dims.mean(0)
    assert means[0] < 1.5 < means[1]  # the clamp binds in one dimension only
    expected = terms.reconstruction.mean() - 0.5 * (1.5 + means[1])
    torch.testing.assert_close(terms.value.mean(), expected)


def test_free_bits_need_a_factorised_posterior(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    family = make_family("full-rank", 2)
    q = family(family.params_of(ppca.exact_posterior(ppca_x)))
    with pytest.raises(ConfigError, match="factorises"):
        WeightedKL(ELBO(), free_bits=0.1)(ppca, q, ppca_x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": -1.0}, "the KL weight must be non-negative, got -1.0"),
        ({"free_bits": -0.5}, "free bits must be non-negative, got -0.5"),
        ({"base": IWAE()}, "weight the ELBO's KL term; objective 'iwae' has none"),
        ({"base": ELBO(estimator="score")}, "they do not combine with estimator 'score'"),
    ],
)
def test_bad_weighting_is_a_one_line_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        WeightedKL(**{"base": ELBO(), **kwargs})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("free_bits", [0.0, 0.4])
def test_weighted_kl_equals_the_old_weighted_elbo(ppca: LinearGaussian, ppca_x: Tensor, free_bits: float) -> None:
    # the weighted ELBO before it wrapped the ELBO value, written out: reconstruction and KL per
    # dimension from the same draws, value reconstruction - w * sum_k (KL_k or lambda where the
    # batch-mean KL_k is below lambda); bit for bit, value and gradient
    q = _mean_field(ppca, ppca_x, torch.tensor([0.1, 2.0], dtype=torch.float64))
    torch.manual_seed(5)
    terms = WeightedKL(ELBO(num_samples=2), weight=0.7, free_bits=free_bits)(ppca, q, ppca_x)
    torch.manual_seed(5)
    if free_bits == 0:
        plain = elbo_terms(ppca, q, ppca_x, num_samples=2, analytic_kl=True)
        reconstruction, kl, penalty = plain.reconstruction, plain.kl, plain.kl
    else:
        z = q.rsample((2,))
        reconstruction = ppca.likelihood(z).log_prob(ppca_x).mean(0)
        kl_dims = torch.distributions.kl_divergence(q.base_dist, ppca.prior().base_dist)
        kl, penalty = kl_dims.sum(-1), free_bits_kl(kl_dims, free_bits)
    assert torch.equal(terms.value, reconstruction - 0.7 * penalty)
    assert torch.equal(terms.reconstruction, reconstruction) and torch.equal(terms.kl, kl)


def test_free_bits_read_the_batch_mean_the_caller_passes(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # the objective asks the caller for the batch statistic (data parallelism passes the global
    # batch's): a mean that puts every dimension below lambda clamps them all
    q = _mean_field(ppca, ppca_x, torch.tensor([0.1, 2.0], dtype=torch.float64))
    objective = WeightedKL(ELBO(), free_bits=0.4)
    torch.manual_seed(6)
    local = objective(ppca, q, ppca_x)
    torch.manual_seed(6)
    clamped = objective(ppca, q, ppca_x, batch_mean=lambda v: torch.zeros_like(v[0]))
    torch.testing.assert_close(clamped.value, clamped.reconstruction - 0.4 * 2)
    assert not torch.equal(local.value, clamped.value)
