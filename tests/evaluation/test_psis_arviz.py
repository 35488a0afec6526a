"""The batched torch k-hat of :mod:`avi.evaluation.psis` against ArviZ's reference implementation."""

from __future__ import annotations

import math

import pytest
import torch

from avi.evaluation.psis import pareto_k


@pytest.mark.parametrize("k", [20, 21, 22, 101, 1000])
def test_khat_equals_arviz_psislw(k: int) -> None:
    # rows of light (Gaussian) and heavy (exponential log weights: Pareto weights, tail index
    # up to 2) tails, and rows with ties in the tail (rounded log weights, a constant row whose
    # tail is empty), where the tail length differs from row to row
    arviz = pytest.importorskip("arviz")
    generator = torch.Generator().manual_seed(k)
    scales = torch.tensor([0.3, 1.0, 3.0, 0.5, 2.0])[:, None]
    gaussian = scales * torch.randn(5, k, generator=generator, dtype=torch.float64)
    pareto = -scales * torch.rand(5, k, generator=generator, dtype=torch.float64).log()
    tied = torch.cat([torch.zeros(1, k, dtype=torch.float64), gaussian[:2].round(decimals=1)])
    log_weights = torch.cat([gaussian, pareto, tied])
    _, expected = arviz.psislw(log_weights.numpy().copy())
    expected = torch.as_tensor(expected)
    expected = torch.where(torch.isfinite(expected), expected, math.nan)  # ArviZ gives inf for no fit
    got = pareto_k(log_weights)
    assert torch.equal(got.isnan(), expected.isnan()), (got, expected)
    assert got[:-3].isfinite().all() == (k >= 21) and got[-3].isnan()
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    torch.testing.assert_close(
        pareto_k(log_weights.float()[None]).double(), got[None], rtol=1e-4, atol=1e-4, equal_nan=True
    )
