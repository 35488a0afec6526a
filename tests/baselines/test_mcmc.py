"""MCMC against exact posteriors: each sampler on each conjugate model, Bayesian linear
regression and PPCA's per-point posteriors; R-hat, InferenceData export, and bad input."""

from __future__ import annotations

import pytest
import torch

from avi.baselines.conjugate import BetaBernoulli, DirichletCategorical, NormalNormal
from avi.baselines.mcmc import MHInfo, MHState, Samples, gibbs, initial_positions, mh, nuts, random_walk_mh_kernel
from avi.baselines.regression import BayesianLinearRegression, BayesianLogisticRegression, synthetic_regression
from avi.baselines.targets import LocalTarget, Target
from avi.errors import AviError, ConfigError
from avi.models import LinearGaussian

pytest.importorskip("arviz")


def conjugate_targets() -> dict[str, Target]:
    g = torch.Generator().manual_seed(7)
    return {
        "normal-normal": NormalNormal(1.0 + torch.randn(20, generator=g, dtype=torch.float64), prior_sd=2.0, noise_sd=1.5),
        "beta-bernoulli": BetaBernoulli(torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0]), a=2.0, b=2.0),
        "dirichlet-categorical": DirichletCategorical(torch.tensor([0, 1, 2, 2, 1, 2, 2, 0, 2, 1]), torch.tensor([1.0, 2.0, 1.0])),
    }


def assert_matches_exact(samples: Samples, target: Target) -> None:
    """Posterior means and variances within 4 Monte Carlo standard errors, and R-hat < 1.01.

    With n_eff the bulk effective sample size of a coordinate (ArviZ), the mean estimate has
    standard error sd / sqrt(n_eff) and the variance estimate sqrt(Var[(theta - mu)^2] / n_eff)
    (the delta method for the mean of the squared deviations; Var[(theta - mu)^2] is estimated
    from the draws). Four standard errors: a correct sampler fails a given check with
    probability about 6e-5.
    """
    exact = target.exact_posterior()
    rhat, ess = samples.diagnostics()
    assert (rhat < 1.01).all(), f"R-hat {rhat.tolist()}"
    draws = samples.draws.flatten(0, 1)
    squared = (draws - exact.mean) ** 2
    mean_se = exact.stddev / ess.sqrt()
    var_se = squared.var(0).sqrt() / ess.sqrt()
    assert ((samples.mean() - exact.mean).abs() < 4 * mean_se).all(), (samples.mean(), exact.mean, mean_se)
    assert ((samples.sd() ** 2 - exact.variance).abs() < 4 * var_se).all(), (samples.sd() ** 2, exact.variance, var_se)


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["normal-normal", "beta-bernoulli", "dirichlet-categorical"])
def test_mh_and_gibbs_match_conjugate_posteriors(name: str, generator: torch.Generator) -> None:
    target = conjugate_targets()[name]
    assert_matches_exact(mh(target, num_samples=6000, warmup=1000, num_chains=4, generator=generator), target)
    assert_matches_exact(gibbs(target, num_samples=1000, warmup=10, num_chains=4, generator=generator), target)


@pytest.mark.statistical
@pytest.mark.slow
@pytest.mark.parametrize("name", ["normal-normal", "beta-bernoulli", "dirichlet-categorical"])
def test_nuts_matches_conjugate_posteriors(name: str, generator: torch.Generator) -> None:
    pytest.importorskip("pyro")
    target = conjugate_targets()[name]
    samples = nuts(target, num_samples=800, warmup=200, num_chains=2, generator=generator)
    assert samples.divergences == 0
    assert_matches_exact(samples, target)


@pytest.mark.statistical
def test_samplers_match_linear_regression_and_ppca_posteriors(generator: torch.Generator) -> None:
    X, y = synthetic_regression(50, 3, generator, correlation=0.5)
    regression = BayesianLinearRegression(X, y)
    assert_matches_exact(mh(regression, num_samples=8000, warmup=2000, num_chains=4, generator=generator), regression)
    assert_matches_exact(gibbs(regression, num_samples=2000, warmup=50, num_chains=4, generator=generator), regression)
    # PPCA: 30 independent posteriors p(z_i | x_i) advanced together, each chain of each point
    # with its own adapted step size.
    W = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    ppca = LinearGaussian.from_parameters(W, torch.zeros(5, dtype=torch.float64), 0.5).requires_grad_(False)
    x, _ = ppca.sample(30, generator)
    local = LocalTarget(ppca, x)
    samples = mh(local, num_samples=4000, warmup=1000, num_chains=4, generator=generator)
    assert samples.draws.shape == (4, 4000, 30, 2)
    assert_matches_exact(samples, local)
    assert_matches_exact(gibbs(local, num_samples=2000, warmup=20, num_chains=4, generator=generator), local)


def test_mh_kernel_is_init_step_on_named_tuples(generator: torch.Generator) -> None:
    target = conjugate_targets()["beta-bernoulli"]
    kernel = random_walk_mh_kernel(target, adapt_steps=100)
    state = kernel.init(initial_positions(target, 3, generator))
    assert isinstance(state, MHState) and state.position.shape == (3, 1)
    new, info = kernel.step(state, generator)
    assert isinstance(info, MHInfo) and info.accept_prob.shape == (3,)
    assert new.iteration == 1 and state.iteration == 0  # the old state is untouched
    assert ((kernel.theta(new) > 0) & (kernel.theta(new) < 1)).all()  # back in the support


def test_samples_export_inference_data(generator: torch.Generator) -> None:
    target = conjugate_targets()["dirichlet-categorical"]
    samples = gibbs(target, num_samples=50, warmup=0, num_chains=2, generator=generator)
    data = samples.to_inference_data()
    assert data.posterior["theta"].shape == (2, 50, 3)
    assert data.posterior.attrs["sampler"] == "gibbs"


class _Rounded(Target):
    """A log joint computed through rounding: no gradient reaches the latent."""

    dim = 2

    def log_joint(self, theta: torch.Tensor) -> torch.Tensor:
        return -(theta.detach().round() ** 2).sum(-1)


def test_hmc_refuses_a_log_joint_without_gradient(generator: torch.Generator) -> None:
    with pytest.raises(AviError, match="HMC/NUTS needs a differentiable log-joint") as info:
        nuts(_Rounded(), num_samples=10, generator=generator)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_samples": 0}, "num_samples must be a positive integer, got 0"),
    ({"num_samples": -5}, "num_samples must be a positive integer, got -5"),
    ({"num_chains": 0}, "num_chains must be a positive integer"),
    ({"warmup": -1}, "warmup must be an integer >= 0"),
])  # fmt: skip
@pytest.mark.parametrize("sampler", [mh, gibbs, nuts])
def test_sample_counts_must_be_positive(sampler, kwargs, message, generator: torch.Generator) -> None:
    target = conjugate_targets()["normal-normal"]
    with pytest.raises(ConfigError, match=message):
        sampler(target, generator=generator, **kwargs)


def test_gibbs_needs_conjugate_conditionals(generator: torch.Generator) -> None:
    target = BayesianLogisticRegression(torch.randn(4, 2, dtype=torch.float64), torch.tensor([0.0, 1, 1, 0]))
    with pytest.raises(AviError, match="no conjugate full conditionals"):
        gibbs(target, generator=generator)
