"""Jackknife estimates from log weights: against their definitions, on a dominant weight, and on
log-normal weights whose mean is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from avi.errors import ConfigError
from avi.evaluation.jackknife import jackknife_log_mean, mean_with_stderr


def _log_mean(lw: Tensor, keep: Tensor) -> Tensor:
    return torch.logsumexp(lw[..., keep], -1) - math.log(int(keep.sum()))


def _by_definition(lw: Tensor, groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """Delete-1 jackknife se of L_k; the grouped jackknife estimate and its delete-a-group se,
    by explicit deletion (groups i mod G)."""
    k = lw.shape[-1]
    everything = torch.ones(k, dtype=torch.bool)
    loo = torch.stack([_log_mean(lw, everything & (torch.arange(k) != i)) for i in range(k)], -1)
    se = ((k - 1) / k * (loo - loo.mean(-1, keepdim=True)).pow(2).sum(-1)).sqrt()
    group = torch.arange(k) % groups

    def debiased(members: list[int]) -> Tensor:
        keep = torch.isin(group, torch.tensor(members))
        n = int(keep.sum())
        sizes = [int((group == a).sum()) for a in members]
        deleted = torch.stack([_log_mean(lw, keep & (group != a)) for a in members]).mean(0)
        c = (1 / n) / (sum(1 / (n - m) for m in sizes) / len(sizes) - 1 / n)
        return _log_mean(lw, keep) + c * (_log_mean(lw, keep) - deleted)

    full = debiased(list(range(groups)))
    leave = torch.stack([debiased([a for a in range(groups) if a != j]) for j in range(groups)], -1)
    group_se = ((groups - 1) / groups * (leave - leave.mean(-1, keepdim=True)).pow(2).sum(-1)).sqrt()
    return se, full, group_se


@pytest.mark.parametrize("k", [3, 7, 100, 103])
def test_matches_the_definitions(k: int) -> None:
    lw = 2 * torch.randn(4, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    estimate = jackknife_log_mean(lw)
    se, debiased, group_se = _by_definition(lw, min(10, k))
    assert torch.allclose(estimate.bound, torch.logsumexp(lw, -1) - math.log(k))
    assert torch.allclose(estimate.bound_stderr, se)
    assert torch.allclose(estimate.debiased, debiased)
    assert torch.allclose(estimate.debiased_stderr, group_se)


def test_a_dominant_weight_stays_finite() -> None:
    lw = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))
    lw[:, 5] = 80.0  # holds all but e^-75 of the sum: 1 - w/S underflows in float32 and float64
    estimate = jackknife_log_mean(lw)
    se, debiased, group_se = _by_definition(lw.double(), 10)
    assert estimate.bound.dtype == torch.float32
    assert torch.allclose(estimate.bound_stderr.double(), se, rtol=1e-5)
    assert torch.allclose(estimate.debiased.double(), debiased, rtol=1e-5)
    assert torch.allclose(estimate.debiased_stderr.double(), group_se, rtol=1e-5)


def test_undefined_parts_are_nan() -> None:
    one, two = jackknife_log_mean(torch.zeros(3, 1)), jackknife_log_mean(torch.randn(3, 2))
    assert torch.equal(one.bound, torch.zeros(3)) and one.bound_stderr.isnan().all() and one.debiased.isnan().all()
    assert two.bound_stderr.isfinite().all() and two.debiased.isfinite().all() and two.debiased_stderr.isnan().all()
    with pytest.raises(ConfigError, match="at least 2 groups"):
        jackknife_log_mean(torch.zeros(3, 5), groups=1)


def test_debiasing_and_spread_on_log_normal_weights() -> None:
    """log w ~ N(0, 1), so log E[w] = 1/2; with k = 20 the IWAE bound is low by about
    (e - 1) / (2 k) = 0.043. Over R = 4000 rows the mean's standard error is about 0.005, so the
    bound's bias shows at 8 of them; the debiased estimate (bias O(1/k^2)) must lie within 3.
    The squared jackknife standard errors average to at least the bound's variance (Efron-Stein),
    up to that variance's own sampling error (about 10% here)."""
    lw = torch.randn(4000, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    estimate = jackknife_log_mean(lw)
    bound, bound_se = estimate.bound.mean().item(), estimate.bound.std().item() / math.sqrt(4000)
    debiased, debiased_se = estimate.debiased.mean().item(), estimate.debiased.std().item() / math.sqrt(4000)
    assert bound < 0.5 - 5 * bound_se
    assert abs(debiased - 0.5) < 3 * debiased_se
    assert estimate.bound_stderr.pow(2).mean() > 0.8 * estimate.bound.var()
    assert estimate.debiased_stderr.pow(2).mean() > 0.8 * estimate.debiased.var()


def test_mean_with_stderr() -> None:
    mean, stderr = mean_with_stderr(torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([0.3, 0.4, 0.0, 0.0]))
    assert mean == pytest.approx(3.0) and stderr == pytest.approx(0.5 / 4)
