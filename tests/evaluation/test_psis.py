"""Pareto k-hat flags a proposal known to be poor and passes a good one; Kish's effective sample size."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from avi.evaluation.psis import KHAT_THRESHOLD, effective_sample_size, khat_summary, khat_warning, pareto_k
from avi.models import LinearGaussian


def _ppca_log_weights(scale: float, k: int = 1000, points: int = 40) -> Tensor:
    """log w = log p(x, z) - log q(z) of PPCA (D = 10, K = 3) with q the exact posterior p(z | x) = N(m, C)
    but its covariance scale * C: then log w = (1 - scale) chi2_K / 2 + const, so w has a
    Pareto tail of index 1 - scale for scale < 1 and is bounded for scale > 1."""
    generator = torch.Generator().manual_seed(0)
    model = LinearGaussian.from_parameters(torch.randn(10, 3, generator=generator), torch.zeros(10), 0.5)
    x, _ = model.sample(points, generator)
    post = model.exact_posterior(x)
    q = MultivariateNormal(post.mean, covariance_matrix=scale * post.covariance_matrix)
    eps = torch.randn(k, points, 3, generator=generator)
    z = q.loc + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    return (model.log_joint(x, z) - q.log_prob(z)).T.detach()


def test_khat_flags_a_too_narrow_proposal() -> None:
    khat = pareto_k(_ppca_log_weights(scale=0.1))  # tail index 0.9: median k-hat 0.81 at k = 1000
    summary = khat_summary(khat)
    assert khat.shape == (40,)
    assert summary.median > KHAT_THRESHOLD and summary.share_over > 0.5, summary
    warning = khat_warning(summary)
    assert warning is not None and "\n" not in warning


def test_khat_passes_a_wide_proposal() -> None:
    khat = pareto_k(_ppca_log_weights(scale=1.5))  # bounded weights
    assert (khat < 0.5).all(), khat
    assert khat_warning(khat_summary(khat)) is None


def test_khat_needs_a_tail_of_five() -> None:
    log_weights = torch.randn(3, 2, 21, generator=torch.Generator().manual_seed(0))
    assert torch.isnan(pareto_k(log_weights[..., :20])).all()  # a tail of 4 samples
    assert torch.isfinite(pareto_k(log_weights)).all() and pareto_k(log_weights).shape == (3, 2)
    summary = khat_summary(torch.full((4,), math.nan))
    assert summary.points == 0 and khat_warning(summary) is None


def test_effective_sample_size() -> None:
    assert torch.allclose(effective_sample_size(torch.zeros(2, 50)), torch.full((2,), 50.0))
    dominated = torch.tensor([[0.0, -100.0, -100.0, -100.0]])
    assert torch.allclose(effective_sample_size(dominated), torch.ones(1))
    two = torch.log(torch.tensor([[1.0, 3.0]]))  # (1 + 3)^2 / (1 + 9)
    assert torch.allclose(effective_sample_size(two), torch.tensor([1.6]))
