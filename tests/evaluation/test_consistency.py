"""Representation metrics: the consistency KL over a data set and the linear probe."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import kl_divergence

from avi.encoders import AmortizedPosterior, DenoisingEncoder, mlp_encoder
from avi.errors import DataError
from avi.evaluation.consistency import consistency_kl, linear_probe_accuracy, posterior_means
from avi.families import make_family


def _posterior(sigma: float = 0.0) -> AmortizedPosterior:
    family = make_family("mean-field", 3)
    return AmortizedPosterior(DenoisingEncoder(mlp_encoder(6, (8,), family.param_size), sigma), family)


def test_consistency_kl_per_point_in_evaluation_mode() -> None:
    # a denoising encoder left in training mode: evaluation sees the clean encoder, so the
    # identity transform costs exactly 0, and chunks of 7 give the per-point KLs of one pass
    posterior = _posterior(sigma=1.0)
    x = torch.randn(20, 6)
    assert torch.equal(consistency_kl(posterior, x, lambda v: v, batch_size=7), torch.zeros(20))
    shifted = consistency_kl(posterior, x, lambda v: v + 1, batch_size=7)
    with torch.no_grad():
        posterior.eval()
        expected = kl_divergence(posterior(x), posterior(x + 1))
    torch.testing.assert_close(shifted, expected)


def test_posterior_means() -> None:
    posterior = _posterior()
    x = torch.randn(5, 6)
    torch.testing.assert_close(posterior_means(posterior, x, batch_size=2), posterior(x).mean.detach())


def test_linear_probe_separates_separable_classes_and_not_random_labels() -> None:
    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(3, 5, generator=g)
    labels = torch.randint(0, 3, (600,), generator=g)
    features = centres[labels] + torch.randn(600, 5, generator=g)
    assert linear_probe_accuracy(features[:400], labels[:400], features[400:], labels[400:]) > 0.97
    # labels independent of the features: test accuracy near 1/3 (binomial sd 0.033 on 200 points)
    shuffled = labels[torch.randperm(600, generator=g)]
    accuracy = linear_probe_accuracy(features[:400], shuffled[:400], features[400:], shuffled[400:])
    assert abs(accuracy - 1 / 3) < 4 * 0.034


def test_probe_needs_one_label_per_point() -> None:
    with pytest.raises(DataError, match="one label per point"):
        linear_probe_accuracy(torch.zeros(4, 2), torch.zeros(3), torch.zeros(2, 2), torch.zeros(2))
