"""Encoders: the denoising wrapper (training-only input noise), weight normalisation, eval_mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avi.encoders import AmortizedPosterior, DenoisingEncoder, mlp_encoder, weight_normalize
from avi.errors import ConfigError
from avi.evaluation import elbo_per_point
from avi.families import make_family
from avi.models import LinearGaussian
from avi.nn import eval_mode


def test_denoising_adds_noise_in_training_mode_only() -> None:
    encoder = mlp_encoder(5, (8,), 4)
    noisy = DenoisingEncoder(encoder, sigma=0.3)
    x = torch.randn(6, 5)
    torch.manual_seed(1)
    out = noisy(x)
    torch.manual_seed(1)
    torch.testing.assert_close(out, encoder(x + 0.3 * torch.randn_like(x)))
    noisy.eval()
    torch.testing.assert_close(noisy(x), encoder(x))
    assert torch.equal(DenoisingEncoder(encoder, sigma=0.0)(x), encoder(x))


def test_negative_noise_scale_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        DenoisingEncoder(nn.Identity(), sigma=-0.1)


def test_eval_mode_restores_every_submodule() -> None:
    outer = nn.Sequential(nn.Dropout(), nn.Sequential(nn.Dropout()))
    outer[1].eval()
    with eval_mode(outer):
        assert not any(m.training for m in outer.modules())
    assert outer.training and outer[0].training and not outer[1].training


def test_evaluation_sees_the_clean_input(ppca: LinearGaussian, ppca_x: torch.Tensor) -> None:
    # elbo_per_point scores q(z|x) from the encoder without noise, even for a posterior left in
    # training mode, and leaves it in training mode
    family = make_family("full-rank", 2)
    encoder = mlp_encoder(5, (), family.param_size).double()
    plain = AmortizedPosterior(encoder, family)
    noisy = AmortizedPosterior(DenoisingEncoder(encoder, sigma=1.0), family)
    torch.manual_seed(2)
    a = elbo_per_point(ppca, plain, ppca_x)[0]
    torch.manual_seed(2)
    b = elbo_per_point(ppca, noisy, ppca_x)[0]
    torch.testing.assert_close(a, b)
    assert noisy.training


def test_weight_normalisation_keeps_the_function_and_trains_direction_and_norm() -> None:
    # weight_norm starts at g = ||v|| row by row, so the encoder computes the same function
    encoder = mlp_encoder(5, (8,), 4)
    x = torch.randn(3, 5)
    before = encoder(x)
    weight_normalize(encoder)
    torch.testing.assert_close(encoder(x), before)
    names = {name for name, _ in encoder.named_parameters()}
    assert {"0.parametrizations.weight.original0", "0.parametrizations.weight.original1"} <= names
    encoder(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
