"""The weighted ELBO of the collapse remedies: value = reconstruction - w * KL term, the KL term
clamped by free bits, the true ELBO terms kept (PPCA, float64)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from avi.errors import ConfigError
from avi.families import make_family
from avi.models import LinearGaussian
from avi.objectives import elbo_terms
from avi.objectives.weighted import free_bits_kl, weighted_elbo_terms


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
    weighted = weighted_elbo_terms(ppca, q, ppca_x, weight=weight, num_samples=3, analytic_kl=analytic_kl)
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
    terms = weighted_elbo_terms(ppca, q, ppca_x, weight=0.5, free_bits=1.5, num_samples=2, analytic_kl=analytic_kl)
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
        weighted_elbo_terms(ppca, q, ppca_x, free_bits=0.1)


@pytest.mark.parametrize(("kwargs", "message"), [({"weight": -1.0}, "weight"), ({"free_bits": -0.5}, "free bits")])
def test_negative_weight_or_free_bits_are_config_errors(
    ppca: LinearGaussian, ppca_x: Tensor, kwargs: dict, message: str
) -> None:
    q = _mean_field(ppca, ppca_x, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ConfigError, match=message):
        weighted_elbo_terms(ppca, q, ppca_x, **kwargs)
