"""bfloat16 networks under autocast with the bound in float32, and the fallback without bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import avi.precision
from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.families import MeanFieldGaussian
from avi.inference import fit
from avi.models import VAEModel
from avi.models.made import MADEModel
from avi.objectives import elbo_terms, iwae_terms
from avi.precision import bf16_supported, full_precision, resolve_precision, set_precision

needs_bf16 = pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no native bf16")


def _vae(data_dim: int = 64, latent_dim: int = 4) -> tuple[VAEModel, AmortizedPosterior]:
    model = VAEModel(data_dim, latent_dim, (128,))
    posterior = AmortizedPosterior(mlp_encoder(data_dim, (128,), 2 * latent_dim), MeanFieldGaussian(latent_dim))
    return model, posterior


def _data(n: int = 2000, dim: int = 64) -> torch.Tensor:
    """Binary data with structure (a few prototypes, pixels flipped at random), so a fitted
    model has large logits, as on MNIST."""
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand(8, dim, generator=g) < 0.5
    x = prototypes[torch.randint(8, (n,), generator=g)].float()
    flips = torch.rand(n, dim, generator=g) < 0.05
    return torch.where(flips, 1 - x, x)


@needs_bf16
def test_networks_compute_in_bf16_and_the_bound_stays_fp32() -> None:
    model, posterior = _vae()
    set_precision("bf16", model, posterior)
    seen: list[torch.dtype] = []
    for module in (*model.decoder, *posterior.encoder):
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    x = _data(100)
    q = posterior(x)
    terms = iwae_terms(model, q, x, k=3)
    assert seen and set(seen) == {torch.bfloat16}  # every product in bf16
    assert q.mean.dtype == torch.float32 and model.likelihood(q.mean).base_dist.logits.dtype == torch.float32
    assert terms.signal is None  # the IWAE bound has no estimator state
    for value in (terms.value, terms.reconstruction, terms.kl):
        assert value.dtype == torch.float32
    terms.value.mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


@needs_bf16
def test_bf16_and_fp32_give_the_same_elbo_on_the_same_parameters_and_noise() -> None:
    """The tolerances are measured margins, not derived bounds (a rigorous bound would follow
    every layer's rounding through the network). Per point: rounding to bf16 (unit roundoff
    u = 2^-8) moves a logit by a few u times the size of its terms, and d log p(x|z) / d l_d =
    x_d - sigmoid(l_d) lies in [-1, 1], so the scale of a point's error is u * sum_d |l_d|;
    measured: at most 0.35 of it (0.00135 / 2^-8), asserted: below 1. On average over points:
    round-to-nearest errors of the activations have both signs, but the weights' rounding is
    shared by every point, so the mean difference need not vanish; measured 0.0002-0.0012 nats
    on this model and on MNIST, asserted: below 0.02 nats."""
    x = _data()
    model, posterior = _vae()
    fit(model, posterior, Dataset(x), epochs=5, batch_size=100, lr=3e-3)  # logits of a fitted model
    values = {}
    for precision in ("fp32", "bf16"):
        set_precision(precision, model, posterior)
        torch.manual_seed(1)  # the same reparameterisation noise
        with torch.no_grad():
            values[precision] = elbo_terms(model, posterior(x), x).value
    with torch.no_grad():
        set_precision("fp32", model, posterior)
        logit_size = model.decoder(posterior(x).mean).abs().sum(-1)
    assert values["fp32"].mean() > -30  # fitted: far above the untrained -44 (64 log 2)
    difference = values["bf16"] - values["fp32"]
    assert difference.abs().max() > 0  # really computed differently
    assert difference.mean().abs() < 0.02
    assert (difference.abs() / logit_size).max() < 2**-8


@needs_bf16
def test_bf16_training_improves_the_elbo_like_fp32() -> None:
    x = _data()
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model, posterior = _vae()
        set_precision(precision, model, posterior)
        history = fit(model, posterior, Dataset(x), epochs=4, batch_size=100, lr=3e-3)
        results[precision] = [stats.elbo for stats in history.train]
    for elbos in results.values():
        assert elbos[-1] > elbos[0] + 5
    # different rounding, different trajectories; a measured margin: after 4 epochs the two
    # training ELBOs differ by 0.07% (-20.257 vs -20.271), asserted within 2%
    assert results["bf16"][-1] == pytest.approx(results["fp32"][-1], rel=0.02)


@needs_bf16
def test_made_decoder_and_float64_models_keep_their_output_dtype() -> None:
    made = MADEModel(10, 2, (32,))
    set_precision("bf16", made)
    z = torch.randn(5, 2)
    x = (torch.rand(5, 10) < 0.5).float()
    assert made.likelihood(z).log_prob(x).dtype == torch.float32
    model, posterior = _vae(16, 2)
    model, posterior = model.double(), posterior.double()
    set_precision("bf16", model, posterior)
    x64 = _data(10, 16).double()
    assert elbo_terms(model, posterior(x64), x64).value.dtype == torch.float64


def test_fp32_runs_no_autocast_and_unknown_precision_is_one_line() -> None:
    model, posterior = _vae()
    set_precision("fp32", model, posterior)
    assert model.decoder.compute_dtype is None and posterior.encoder.compute_dtype is None
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))


def test_without_bf16_hardware_precision_falls_back_to_fp32_with_a_message(monkeypatch) -> None:
    monkeypatch.setattr(avi.precision, "bf16_supported", lambda device: False)
    precision, message = resolve_precision("bf16", torch.device("cpu"))
    assert precision == "fp32" and "running in fp32" in message and "\n" not in message
    assert resolve_precision("fp32", torch.device("cpu")) == ("fp32", None)


def test_full_precision_runs_a_block_in_fp32_and_restores_bf16() -> None:
    """A bf16 run's validation and diagnostics run inside ``full_precision``."""
    model, posterior = _vae()
    set_precision("bf16", model, posterior)
    with full_precision(model, posterior):
        assert model.decoder.compute_dtype is None and posterior.encoder.compute_dtype is None
    assert model.decoder.compute_dtype == torch.bfloat16 and posterior.encoder.compute_dtype == torch.bfloat16
