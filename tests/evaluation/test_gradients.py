"""The gradient-moments diagnostic on an estimator whose gradient distribution is known."""

from __future__ import annotations

import pytest
import torch

from avi.errors import ConfigError
from avi.evaluation.gradients import gradient_moments


@pytest.mark.statistical
def test_mean_and_variance_of_a_known_gradient() -> None:
    # d/dw sum(w * eps) = eps ~ N(0, diag(1, 4)) and d/dv (v * 3) = 3 on every draw.
    # Over n = 2,000 draws the mean has se = sd / sqrt(n) (0.022 and 0.045) and the sample
    # variance se = var * sqrt(2 / (n - 1)) (0.032 and 0.13); tolerances are 4.5 se.
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    v = torch.ones((), dtype=torch.float64, requires_grad=True)
    unused = torch.ones(3, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)

    def objective() -> torch.Tensor:
        return (w * scale * torch.randn(2, generator=g, dtype=torch.float64)).sum() + 3 * v

    m = gradient_moments(objective, {"w": w, "v": v, "unused": unused}, num_draws=2000)
    torch.testing.assert_close(m["w"].mean, torch.zeros(2, dtype=torch.float64), atol=4.5 * 0.045, rtol=0)
    torch.testing.assert_close(m["w"].variance, scale**2, atol=4.5 * 0.13, rtol=0)
    assert m["v"].mean.item() == 3.0 and m["v"].total_variance == 0.0
    assert m["unused"].total_variance == 0.0 and m["unused"].mean.abs().sum() == 0
    assert m["w"].total_variance == pytest.approx(float(m["w"].variance.sum()))


def test_needs_two_draws() -> None:
    w = torch.zeros(1, requires_grad=True)
    with pytest.raises(ConfigError, match="num_draws"):
        gradient_moments(lambda: w.sum(), {"w": w}, num_draws=1)
