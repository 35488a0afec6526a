"""The VAE's generative side: shapes, data checks, and that a small one learns."""

from __future__ import annotations

import pytest
import torch

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError, DataError
from avi.evaluation import mean_elbo
from avi.families import make_family
from avi.inference import fit
from avi.models import VAEModel


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_shapes(likelihood: str, generator: torch.Generator) -> None:
    model = VAEModel(6, 3, hidden=(8, 8), activation="tanh", likelihood=likelihood)
    z = torch.randn(4, 5, 3)
    lik = model.likelihood(z)
    assert lik.batch_shape == (4, 5) and lik.event_shape == (6,)
    assert model.prior().event_shape == (3,) and model.prior().batch_shape == ()
    x, z0 = model.sample(5, generator)
    assert x.shape == (5, 6) and z0.shape == (5, 3)
    assert model.log_joint(x, z).shape == (4, 5)
    assert model.binary_data == (likelihood == "bernoulli")
    if likelihood == "bernoulli":
        assert ((x == 0) | (x == 1)).all()


def test_log_joint_is_prior_plus_bernoulli_likelihood() -> None:
    model = VAEModel(4, 2, hidden=(5,))
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    z = torch.randn(3, 1, 2)
    logits = model.decoder(z)
    log_lik = (
        x * torch.nn.functional.logsigmoid(logits)
        + (1 - x) * torch.nn.functional.logsigmoid(-logits)
    ).sum(-1)
    log_prior = -0.5 * (z**2).sum(-1) - torch.log(torch.tensor(2 * torch.pi))
    torch.testing.assert_close(model.log_joint(x, z), log_prior + log_lik)


def test_gaussian_likelihood_learns_its_scale() -> None:
    model = VAEModel(4, 2, hidden=(5,), likelihood="gaussian")
    assert "raw_scale" in dict(model.named_parameters())
    model.check_data(torch.randn(3, 4))  # real-valued data is fine


def test_unknown_likelihood_and_activation_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="likelihood"):
        VAEModel(4, 2, likelihood="poisson")
    with pytest.raises(ConfigError, match="activation"):
        VAEModel(4, 2, activation="gelu")


def test_bernoulli_model_rejects_non_binary_data() -> None:
    model = VAEModel(3, 2, hidden=(4,))
    model.check_data(torch.tensor([[0.0, 1.0, 1.0]]))
    with pytest.raises(DataError, match="not binary"):
        model.check_data(torch.tensor([[0.0, 0.5, 1.0]]))


def test_small_vae_learns_structured_binary_data() -> None:
    # Data from a random "teacher" VAE with large weights: strongly dependent pixels. After 5
    # epochs the student's held-out ELBO, a lower bound on its log-likelihood, must beat the
    # best model with independent pixels, which it can only do by using its latent variables.
    torch.manual_seed(0)
    teacher = VAEModel(20, 2, hidden=(16,), activation="tanh")
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(8)
    x, _ = teacher.sample(2500, torch.Generator().manual_seed(0))
    train, test = Dataset(x[:2000]), Dataset(x[2000:])
    p = x[:2000].mean(0).clamp(1e-3, 1 - 1e-3)
    independent = (test.x * p.log() + (1 - test.x) * (1 - p).log()).sum(1).mean().item()

    model = VAEModel(20, 2, hidden=(32,))
    family = make_family("mean-field", 2)
    posterior = AmortizedPosterior(mlp_encoder(20, (32,), family.param_size), family)
    before = mean_elbo(model, posterior, test)
    history = fit(model, posterior, train, epochs=5, batch_size=50, lr=1e-2, validation=test)
    after = history.validation_elbo[-1]
    assert len(history.train) == 5 and len(history.validation_elbo) == 5
    assert after > before + 4  # measured: -14.0 -> -7.6
    assert after > independent + 1  # measured: -9.4
    assert history.train[-1].elbo > history.train[0].elbo
