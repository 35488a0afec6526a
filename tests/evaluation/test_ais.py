"""Annealed importance sampling against PPCA's exact log p(x)."""

from __future__ import annotations

import math

import pytest
import torch

from avi.errors import ConfigError
from avi.evaluation import ais, ais_log_likelihood, log_likelihood
from avi.evaluation.importance import row_bytes
from avi.families import inverse_softplus, make_family
from avi.inference import LocalPosterior
from avi.models import LinearGaussian


@pytest.fixture
def case() -> tuple[LinearGaussian, torch.Tensor, LocalPosterior]:
    """PPCA (D=8, K=3, correlated posterior) and a mean-field q at the exact means with
    standard deviations 1.5x the posterior marginals': a usable but imperfect proposal."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(8, 3, generator=g, dtype=torch.float64)
    W[:, 1] = 0.9 * W[:, 0] + 0.3 * W[:, 1]
    model = LinearGaussian.from_parameters(W, torch.zeros(8, dtype=torch.float64), 0.3).requires_grad_(False)
    x = model.sample(40, g)[0]
    exact = model.exact_posterior(x)
    family = make_family("mean-field", 3)
    initial = torch.cat([exact.mean, inverse_softplus(1.5 * exact.stddev)], dim=-1)
    return model, x, LocalPosterior(40, family, initial=initial)


@pytest.mark.statistical
def test_ais_matches_the_exact_log_marginal_and_is_tighter_than_iwae(case) -> None:
    model, x, q = case
    exact = model.exact_log_marginal(x)
    torch.manual_seed(1)
    ais = ais_log_likelihood(model, q, x, steps=50, chains=16)
    # Mean error over 40 independent points; its standard error is sqrt(sum se_i^2) / 40 with
    # se_i the delta-method standard error of each point's estimate. AIS is a lower bound in
    # expectation whose bias shrinks with the steps: within 3 standard errors of exact here
    # (measured: bias -0.05, standard error of the mean 0.03).
    ais_error = (ais.value - exact).mean()
    se = ais.stderr.pow(2).sum().sqrt() / x.shape[0]
    assert abs(ais_error) < 3 * se + 0.02
    # With the same 16 samples per point, IWAE falls short by 0.152 nats on average (200 seeds:
    # sd of one mean error 0.104). Averaged over 50 seeds its standard error is 0.015, so the
    # IWAE error is below -0.10 (3.5 sd margin), and AIS (error -0.06, se 0.03) must be above
    # it by 0.03 (about 2 sd of the difference below the expected 0.09).
    iwae_error = torch.stack([(log_likelihood(model, q, x, k=16, seed=s).value - exact).mean() for s in range(50)]).mean()
    assert iwae_error < -0.1 and ais_error > iwae_error + 0.03


@pytest.mark.statistical
def test_step_sizes_adapt_towards_the_target_acceptance_rate(case, monkeypatch) -> None:
    """Each chain's step size grows after an accepted move and shrinks after a rejected one so
    that its log drifts to zero at an acceptance rate of 0.65 (the rule of +2% / -2% settles at
    0.5). Over the last 300 of 1,000 transitions of 100 chains on 10 points, the mean rate is
    within 0.06 of the target: 3 standard errors (each chain's mean acceptance one observation of
    variance at most 1/4: 0.5 / sqrt(1000) = 0.016) plus the lag of the adaptation behind the
    annealing's moving target (measured -0.01 at this schedule)."""
    model, x, q = case
    rates: list[torch.Tensor] = []
    hmc_step = ais._hmc_step

    def recorded(*args, **kwargs):
        z, accepted = hmc_step(*args, **kwargs)
        rates.append(accepted.double().mean())
        return z, accepted

    monkeypatch.setattr(ais, "_hmc_step", recorded)
    torch.manual_seed(5)
    ais_log_likelihood(model, q, x[:10], steps=1000, chains=100)
    assert len(rates) == 999
    assert abs(torch.stack(rates[-300:]).mean().item() - ais.TARGET_ACCEPTANCE) < 0.06


def test_one_step_is_the_iwae_bound(case) -> None:
    """With T = 1 there is no transition: log w = log p(x, z) - log q(z), z ~ q."""
    model, x, q = case
    torch.manual_seed(3)
    one = ais_log_likelihood(model, q, x, steps=1, chains=2000)
    torch.manual_seed(4)
    iwae = log_likelihood(model, q, x, k=2000)
    # independent estimates of the same quantity; each point's two values differ by noise of
    # standard error sqrt(se_a^2 + se_b^2)
    z = (one.value - iwae.value) / (one.stderr.pow(2) + iwae.stderr.pow(2)).sqrt()
    assert z.abs().max() < 4.5  # 40 points: P(max |z| > 4.5) < 40 * 7e-6
    assert one.k == 2000


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"chains": 0}, {"leapfrog_steps": 0}, {"step_size": 0.0}])
def test_bad_settings_are_config_errors(case, kwargs) -> None:
    model, x, q = case
    with pytest.raises(ConfigError, match="AIS needs"):
        ais_log_likelihood(model, q, x, **kwargs)


def test_gap_decomposition_can_use_ais() -> None:
    """The decomposition's log p(x) by AIS, its progress told per batch of points (as the
    IWAE bound's is): the points done climb to all 20, in batches of 8 under the budget."""
    from avi.encoders import AmortizedPosterior, mlp_encoder
    from avi.evaluation import gap_decomposition
    from avi.models import VAEModel

    torch.manual_seed(0)
    model = VAEModel(6, 2, (8,)).requires_grad_(False)
    x = model.sample(20, torch.Generator().manual_seed(0))[0]
    family = make_family("mean-field", 2)
    posterior = AmortizedPosterior(mlp_encoder(6, (8,), family.param_size), family)
    heard: list[tuple[str, int, int]] = []
    budget = 8 * 8 * ais.GRAD_ROWS * row_bytes(model, torch.float32) / 2**20  # 8 points' 8 chains
    gaps = gap_decomposition(
        model, posterior, x, k=8, steps=50, ais_steps=5, memory_budget=budget,
        on_progress=lambda *told: heard.append(told),
    )  # fmt: skip
    assert gaps.log_likelihood_method == "ais"
    assert [done for what, done, total in heard if what == "log p(x)"] == [8, 16, 20]
    assert math.isfinite(gaps.log_likelihood) and gaps.amortization_gap > 0
