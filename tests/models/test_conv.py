"""The convolutional VAE for 28x28 images (model.network = "conv"): the networks' shapes, the
decoder's Bernoulli likelihood against its logits, avi fit / --resume / avi evaluate in
process, and the one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avi.encoders.conv import conv_encoder
from avi.errors import ConfigError
from avi.evaluation.importance import fast_path, row_bytes
from avi.models import VAEModel
from avi.nn import ConvDecoder
from avi.runs.build import build_model, build_posterior
from avi.runs.config import load_config
from tests.cli_harness import avi_in_process


def test_the_networks_map_images_to_parameters_and_latents_to_images() -> None:
    """Encoder x (B, 784) -> (B, P); decoder z (S, B, K) -> (S, B, 784), each sample as if alone;
    in bfloat16 the output keeps z's dtype."""
    encoder = conv_encoder(784, [16], 6)
    assert encoder(torch.rand(3, 784)).shape == (3, 6)
    decoder = ConvDecoder(4, [16], "tanh")
    z = torch.randn(5, 3, 4)
    out = decoder(z)
    assert out.shape == (5, 3, 784)
    torch.testing.assert_close(out[2], decoder(z[2]))
    decoder.compute_dtype = torch.bfloat16
    low = decoder(z)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, out, atol=0.1, rtol=0.05)


def test_the_likelihood_is_the_bernoulli_of_the_decoders_logits() -> None:
    """log p(x | z) = sum_d x_d l_d - softplus(l_d), l = f(z), for z (S, B, K); the conv VAE is
    not the Bernoulli-MLP fast path of evaluation, which keys on an MLP's last linear layer."""
    model = VAEModel(784, 4, [16], network="conv")
    z, x = torch.randn(2, 3, 4), torch.bernoulli(torch.full((3, 784), 0.3))
    logits = model.decoder(z)
    by_hand = (x * logits - F.softplus(logits)).sum(-1)
    torch.testing.assert_close(model.likelihood(z).log_prob(x), by_hand)
    assert not fast_path(model) and fast_path(VAEModel(784, 4, [16]))


def test_a_gaussian_likelihood_starts_its_mean_at_the_per_pixel_bias() -> None:
    loc = torch.linspace(0, 1, 784)
    model = VAEModel(784, 4, [16], likelihood="gaussian", network="conv", loc=loc, scale=0.3)
    torch.testing.assert_close(model.decoder.bias.detach(), loc)
    torch.testing.assert_close(F.softplus(model.raw_scale.detach()), torch.full((784,), 0.3))


def test_the_config_builds_conv_networks_for_both_sides() -> None:
    config = load_config(None, {"model": {"preset": "mnist-conv"}})
    assert (config.model.network, config.model.latent_dim, config.model.hidden) == ("conv", 32, [256])
    model = build_model(config, 784)
    posterior: Any = build_posterior(config, model, 10)
    assert isinstance(model.decoder, ConvDecoder)
    assert posterior.encoder[1].weight.shape == (32, 1, 4, 4)
    assert posterior.params(torch.rand(2, 784)).shape == (2, 64)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": {"name": "hvae", "network": "conv"}}, "model.network 'conv' is for the vae"),
        ({"model": {"decoder": "made", "network": "conv"}}, "not the made decoder"),
        ({"model": {"name": "ppca", "network": "conv"}}, "not model 'ppca'"),
    ],
)
def test_conv_is_refused_for_other_models(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, overrides)
    assert "\n" not in str(err.value)


def test_conv_is_refused_for_data_that_are_not_28x28_images() -> None:
    config = load_config(None, {"model": {"network": "conv"}})
    with pytest.raises(ConfigError, match="the data have dimension 20") as err:
        build_model(config, 20)
    assert "\n" not in str(err.value)
    config.inference.encoder_hidden = [8]
    with pytest.raises(ConfigError, match="the data have dimension 20"):
        build_posterior(config, VAEModel(20, 4, [8]), 10)


def test_fit_resume_and_evaluate_a_conv_vae(tmp_path: Path) -> None:
    """avi fit --network conv trains an epoch on 784-dimensional data, --resume a second, and
    avi evaluate --k 10 scores the test split: a finite log-likelihood above the ELBO's bound."""
    run = tmp_path / "run"
    fit = ("--data", "synthetic", "--set", "data.synthetic_points=200", "--network", "conv", "--latent-dim", "4",
           "--hidden", "16", "--batch-size", "50", "--set", "train.threads=1")  # fmt: skip
    avi_in_process("fit", *fit, "--epochs", "1", "--out", str(run))
    avi_in_process("fit", "--resume", str(run), "--epochs", "2")
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 2 and state["posterior"]["encoder.1.weight"].shape == (32, 1, 4, 4)
    assert state["model"]["decoder.bias"].shape == (784,)
    result = json.loads(avi_in_process("evaluate", str(run), "--k", "10", "--json").stdout)
    assert result["n"] == 20 and math.isfinite(result["log_likelihood"])
    assert result["elbo"] - 1.0 <= result["log_likelihood"] < 0


def test_fit_refuses_conv_on_other_data_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((50, 20)).astype(np.float32))
    result = avi_in_process("fit", "--data", str(data), "--network", "conv", "--out", str(tmp_path / "never"), code=2)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "the data have dimension 20" in lines[0], result.output
    assert not (tmp_path / "never").exists()


def test_an_importance_sample_of_the_conv_decoder_is_sized_with_its_maps() -> None:
    """row_bytes counts the convolutions' maps (32 x 14 x 14, then 1 x 28 x 28) beside the
    linear layers (256, then 64 x 7 x 7), each twice (output and activation), so that a
    memory budget holds for the conv decoder too."""
    model = VAEModel(784, 32, [256], network="conv")
    linear, maps = 256 + 64 * 7 * 7, 32 * 14 * 14 + 28 * 28
    assert row_bytes(model, torch.float32) == 4 * (2 * (linear + maps) + 4 * 784 + 6 * 32)
