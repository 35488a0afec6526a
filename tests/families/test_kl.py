"""The KLs avi registers between full-rank and diagonal Gaussians."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Laplace, MultivariateNormal, Normal, kl_divergence

from avi.families.kl import kl_diagonal_full_rank, kl_full_rank_diagonal


def _full_rank(batch: int, k: int) -> MultivariateNormal:
    A = torch.randn(batch, k, k, dtype=torch.float64)
    cov = A @ A.mT / k + 0.2 * torch.eye(k, dtype=torch.float64)
    return MultivariateNormal(torch.randn(batch, k, dtype=torch.float64), covariance_matrix=cov)


def _diagonal(batch: int, k: int) -> Independent:
    loc = torch.randn(batch, k, dtype=torch.float64)
    scale = 0.3 + torch.rand(batch, k, dtype=torch.float64) * 2
    return Independent(Normal(loc, scale), 1)


def _as_full_rank(p: Independent) -> MultivariateNormal:
    return MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))


def test_full_rank_to_diagonal_matches_torch_mvn_kl() -> None:
    q, p = _full_rank(6, 4), _diagonal(6, 4)
    expected = kl_divergence(q, _as_full_rank(p))
    torch.testing.assert_close(kl_full_rank_diagonal(q, p), expected, rtol=1e-12, atol=1e-12)
    # dispatch: kl_divergence finds the registered function
    torch.testing.assert_close(kl_divergence(q, p), expected, rtol=1e-12, atol=1e-12)


def test_diagonal_to_full_rank_matches_torch_mvn_kl() -> None:
    q, p = _diagonal(6, 4), _full_rank(6, 4)
    expected = kl_divergence(_as_full_rank(q), p)
    torch.testing.assert_close(kl_diagonal_full_rank(q, p), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl_divergence(q, p), expected, rtol=1e-12, atol=1e-12)


def test_broadcasts_against_an_unbatched_prior() -> None:
    # the ELBO's case: q has batch (B,), the prior N(0, I) has batch ()
    q = _full_rank(5, 3)
    prior = Independent(
        Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1
    )
    kl = kl_divergence(q, prior)
    assert kl.shape == (5,)
    # KL(N(m, S) || N(0, I)) = 1/2 [tr S + m^T m - K - log det S]
    S = q.covariance_matrix
    expected = 0.5 * (
        torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) + (q.loc**2).sum(-1) - 3 - torch.logdet(S)
    )
    torch.testing.assert_close(kl, expected)


@pytest.mark.statistical
@pytest.mark.parametrize("direction", ["full-rank||diagonal", "diagonal||full-rank"])
def test_kl_matches_monte_carlo(direction: str) -> None:
    # As torch's test_kl_monte_carlo: KL(q || p) = E_q[log q(z) - log p(z)]. The mean of n
    # independent terms has standard error sd / sqrt(n), sd estimated from the same draws
    # (its own error is O(1/sqrt(n)), negligible at n = 100,000). Four batch members at 4
    # standard errors each: false-alarm probability below 4 * 6.3e-5.
    q, p = (
        (_full_rank(4, 3), _diagonal(4, 3))
        if direction.startswith("full")
        else (_diagonal(4, 3), _full_rank(4, 3))
    )
    n = 100_000
    z = q.sample((n,))
    terms = q.log_prob(z) - p.log_prob(z)
    se = terms.std(0) / n**0.5
    assert ((terms.mean(0) - kl_divergence(q, p)).abs() < 4 * se).all()
    assert (se < 0.05).all()  # the test has power: errors of a few hundredths would show


def test_other_base_distributions_are_not_implemented() -> None:
    # elbo_per_point relies on NotImplementedError to fall back to a Monte Carlo KL
    q = _full_rank(2, 3)
    p = Independent(
        Laplace(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1
    )
    with pytest.raises(NotImplementedError):
        kl_divergence(q, p)
    with pytest.raises(NotImplementedError):
        kl_divergence(p, q)
