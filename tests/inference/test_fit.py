"""The training loop: gradients reach every parameter, a fixed model stays fixed, and amortized
VI with a linear encoder recovers the exact PPCA posterior (or the best mean-field one)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.families import make_family
from avi.families.discrete import BernoulliFamily
from avi.inference import Diverged, EpochStats, Hook, LocalPosterior, TrainState, fit, make_optimizers, run, train_epoch
from avi.models import LatentVariableModel, LinearGaussian, SigmoidBeliefNet, VAEModel
from avi.objectives import ELBO, IWAE
from avi.objectives.estimators import NVILBaseline
from tests.closed_forms import (
    best_mean_field_gap,
    gaussian_moments,
    linear_gaussian_elbo,
    make_ppca,
)

FAMILIES = ["mean-field", "full-rank"]


def _model_and_data(kind: str) -> tuple[LatentVariableModel, Tensor]:
    if kind == "ppca":
        model = LinearGaussian(5, 2)
        return model, torch.randn(16, 5)
    model = VAEModel(5, 2, hidden=(8,), likelihood=kind)
    x = torch.randn(16, 5)
    return model, (x > 0).float() if kind == "bernoulli" else x


def _assert_every_parameter_has_a_gradient(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        grad = p.grad.to_dense() if p.grad.is_sparse else p.grad
        assert grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["ppca", "bernoulli", "gaussian"])
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("amortized", [True, False], ids=["amortized", "local"])
def test_every_parameter_receives_a_gradient(kind: str, name: str, amortized: bool) -> None:
    model, x = _model_and_data(kind)
    family = make_family(name, 2)
    # a random table rather than N(0, I) for every point
    posterior = (
        AmortizedPosterior(mlp_encoder(5, (8,), family.param_size), family)
        if amortized
        else LocalPosterior(16, family, initial=0.3 * torch.randn(16, family.param_size))
    )
    optimizers = make_optimizers(model, posterior)
    state = TrainState(model, posterior, optimizers, torch.Generator().manual_seed(0))
    stats = train_epoch(state, Dataset(x), ELBO(), batch_size=16)
    assert stats.examples == 16
    _assert_every_parameter_has_a_gradient(model)
    _assert_every_parameter_has_a_gradient(posterior)


def test_a_fixed_model_stays_fixed(ppca_x: Tensor) -> None:
    model = make_ppca().requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    family = make_family("full-rank", 2)
    posterior = AmortizedPosterior(mlp_encoder(5, (), family.param_size), family).double()
    encoder_before = posterior.encoder[0].weight.detach().clone()
    optimizers = make_optimizers(model, posterior, train_model=False)
    assert {id(p) for o in optimizers for g in o.param_groups for p in g["params"]} == {
        id(p) for p in posterior.parameters()
    }
    history = fit(model, posterior, Dataset(ppca_x), epochs=3, batch_size=10, train_model=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not torch.equal(posterior.encoder[0].weight.detach(), encoder_before)
    assert len(history.train) == 3 and history.validation_elbo == []


def test_epoch_stats_are_consistent(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    family = make_family("mean-field", 2)
    posterior = AmortizedPosterior(mlp_encoder(5, (), family.param_size), family).double()
    optimizers = make_optimizers(ppca, posterior, train_model=False)
    state = TrainState(ppca, posterior, optimizers, torch.Generator().manual_seed(0))
    stats = train_epoch(state, Dataset(ppca_x), ELBO(), batch_size=20)
    assert stats.examples == 50  # the last batch is partial and still counted
    assert stats.elbo == pytest.approx(stats.reconstruction - stats.kl)
    assert stats.objective == pytest.approx(stats.elbo)
    iwae = train_epoch(state, Dataset(ppca_x), IWAE(k=5), batch_size=20)
    assert iwae.objective > iwae.elbo  # the IWAE bound of a set of draws is above their mean ELBO


def test_fit_reports_validation_for_amortized_posteriors_only(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    data, validation = Dataset(ppca_x[:40]), Dataset(ppca_x[40:])
    family = make_family("mean-field", 2)
    amortized = AmortizedPosterior(mlp_encoder(5, (), family.param_size), family).double()
    history = fit(ppca, amortized, data, epochs=2, batch_size=20, train_model=False, validation=validation)
    assert len(history.validation_elbo) == 2 and all(math.isfinite(v) for v in history.validation_elbo)
    local = LocalPosterior(40, family).double()
    history = fit(ppca, local, data, epochs=2, batch_size=20, train_model=False, validation=validation)
    assert history.validation_elbo == [] and len(history.train) == 2


@pytest.mark.slow
@pytest.mark.statistical
@pytest.mark.parametrize("name", FAMILIES)
def test_amortized_linear_encoder_recovers_the_optimal_gaussian(name: str) -> None:
    # For PPCA the exact posterior has a mean affine in x and a covariance S shared by all x,
    # so an affine encoder can output it exactly (full-rank), or the best factorised Gaussian
    # (mean-field: same mean, variances 1 / diag(S^-1)). Adam on the ELBO (16 samples,
    # analytic KL, model fixed), full batch, with a cosine learning-rate decay so the
    # stochastic iterates settle. The shortfall log p(x) - ELBO, in closed form, must be 0
    # (full-rank) or the KL 1/2 [sum log diag(S^-1) + log det S] (mean-field) within 0.01 nats
    # at every point. Deterministic given the seed; measured errors are below 1e-3.
    ppca = make_ppca()
    x, _ = ppca.sample(200, torch.Generator().manual_seed(2))
    family = make_family(name, 2)
    posterior = AmortizedPosterior(mlp_encoder(5, (), family.param_size), family).double()
    lr, epochs = 0.05, 1500
    optimizers = make_optimizers(ppca, posterior, lr=lr, train_model=False)
    objective = ELBO(num_samples=16)
    generator = torch.Generator().manual_seed(3)
    for epoch in range(epochs):
        for group in (g for o in optimizers for g in o.param_groups):
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        train_epoch(TrainState(ppca, posterior, optimizers, generator), Dataset(x), objective, batch_size=200)

    with torch.no_grad():
        q = posterior(x)
        post = ppca.exact_posterior(x)
        shortfall = ppca.exact_log_marginal(x) - linear_gaussian_elbo(ppca, q, x)
    mean, cov = gaussian_moments(q)
    S = post.covariance_matrix
    if name == "full-rank":
        expected_shortfall, expected_cov = torch.zeros(()), S
    else:
        expected_shortfall = best_mean_field_gap(S[0])
        expected_cov = torch.diag_embed(1 / torch.diagonal(torch.linalg.inv(S), dim1=-2, dim2=-1))
        assert expected_shortfall > 0.5  # the posterior is strongly correlated: mean-field is visibly worse
    assert (shortfall - expected_shortfall).abs().max() < 0.01
    torch.testing.assert_close(mean, post.mean, rtol=0, atol=0.02)
    torch.testing.assert_close(cov, expected_cov, rtol=0, atol=0.01)


def test_fit_trains_the_nvil_baseline_network() -> None:
    # NVIL's baseline b(x) is fitted to the learning signal by the caller's optimiser: fit owns
    # that optimiser, so the network moves (without it, it kept its initial weights).
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(64, 10, generator=g), generator=g)
    model = SigmoidBeliefNet(10, 3)
    family = BernoulliFamily(3)
    posterior = AmortizedPosterior(mlp_encoder(10, (8,), family.param_size), family)
    baseline = NVILBaseline(10, hidden=4)
    before = [p.detach().clone() for p in baseline.parameters()]
    objective = ELBO(estimator="nvil")
    fit(model, posterior, Dataset(x), epochs=2, batch_size=16, objective=objective, baseline=baseline)
    assert all(not torch.equal(a, p) for a, p in zip(before, baseline.parameters()))


def test_a_parameter_left_non_finite_by_an_epoch_stops_the_run_before_any_hook(ppca_x: Tensor) -> None:
    """The epoch's objectives were finite, its last update was not: the loop raises Diverged
    and no hook sees the epoch (none could diagnose or save the weights)."""
    family = make_family("mean-field", 2)
    posterior = AmortizedPosterior(mlp_encoder(5, (), family.param_size), family).double()
    model = make_ppca()
    state = TrainState(model, posterior, make_optimizers(model, posterior), torch.Generator())
    seen: list[int] = []

    class Record(Hook):
        def on_epoch(self, state: TrainState, record: dict[str, object]) -> bool:
            seen.append(state.epoch)
            return False

    def epoch(state: TrainState, data: Dataset, hooks: object) -> EpochStats:
        stats = train_epoch(state, data, ELBO(), batch_size=50)
        if state.epoch == 1:  # the second epoch's last update overflows
            with torch.no_grad():
                posterior.encoder[0].weight[0, 0] = math.inf
        return stats

    with pytest.raises(Diverged, match="a parameter is not finite at epoch 2 "):
        run(state, Dataset(ppca_x), epoch, epochs=3, hooks=[Record()])
    assert seen == [1] and state.epoch == 1
