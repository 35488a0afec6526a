"""Gradient estimators: unbiasedness against exact or reparameterised gradients, variance
reduction of the control variates, and the path-derivative estimators' exact properties, on PPCA
(float64) with a full-rank q off the posterior of 10 points.

Tolerances of the statistical tests: a component of the mean of n independent gradient draws has
standard error se = sqrt(var / n) (var the sample variance; by the CLT the mean is close to
normal for n = 500). For a difference of two independent means, se = sqrt((var_a + var_b) / n).
We assert |mean - reference| < 4.5 se on every one of the 50 components of d/d lambda:
P(|Z| > 4.5) = 6.8e-6, so a correct estimator fails with probability below 50 * 6.8e-6 = 3.4e-4
(union bound); the seed is fixed, so the draws are the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.evaluation.gradients import GradientMoments, gradient_moments
from avi.families import make_family
from avi.inference import LocalPosterior, fit
from avi.models import LinearGaussian
from avi.objectives import ELBO, IWAE, RWS, Terms, iwae_terms, objective_named
from avi.objectives.bounds import elbo_terms
from avi.objectives.estimators import (
    MovingAverageBaseline,
    NVILBaseline,
    dreg_terms,
    score_terms,
    stl_terms,
    stop_gradient,
    vimco_terms,
)
from tests.closed_forms import linear_gaussian_elbo
from tests.objectives.common import grads, off_posterior_params

FAMILY = make_family("full-rank", 2)
DRAWS = 500
Z_TOL = 4.5  # standard errors; see the module docstring


@pytest.fixture
def x(ppca: LinearGaussian, ppca_x: Tensor) -> Tensor:
    return ppca_x[:10]


@pytest.fixture
def params(ppca: LinearGaussian, x: Tensor) -> Tensor:
    return off_posterior_params(ppca, x).requires_grad_(True)


def _moments(estimator: Callable[[Distribution], Tensor], params: Tensor) -> GradientMoments:
    return gradient_moments(lambda: estimator(FAMILY(params)).sum(), {"lambda": params}, num_draws=DRAWS)["lambda"]


def _trained_nvil(model: LinearGaussian, x: Tensor, params: Tensor) -> NVILBaseline:
    """An NVIL baseline fitted for 500 Adam steps to the signal at the fixed lambda."""
    baseline, objective = NVILBaseline(x.shape[1]).double(), ELBO(estimator="nvil")
    opt = torch.optim.Adam(baseline.parameters(), lr=1e-2)
    for _ in range(500):
        opt.zero_grad()
        terms = objective(model, FAMILY(params.detach()), x, state=baseline)
        (-terms.value.sum()).backward()
        opt.step()
        objective.update_state(baseline, terms)
    return baseline


def _warm_moving_average(model: LinearGaussian, x: Tensor, params: Tensor) -> MovingAverageBaseline:
    baseline, objective = MovingAverageBaseline(), ELBO(estimator="score-baseline")
    for _ in range(20):
        objective.update_state(baseline, objective(model, FAMILY(params.detach()), x, state=baseline))
    return baseline


def _score_iwae(model: LinearGaussian, q: Distribution, x: Tensor, k: int) -> Tensor:
    """Plain REINFORCE for the IWAE bound: the bound L itself as every sample's signal."""
    with torch.no_grad():
        z = q.sample((k,))
    log_q = q.log_prob(z)
    log_w = model.log_joint(x, z) - log_q
    iwae = torch.logsumexp(log_w, 0) - math.log(k)
    score = (log_q * iwae.detach()).sum(0)
    return iwae + score - score.detach()


def _assert_same_mean(a: GradientMoments, b: GradientMoments | Tensor) -> None:
    if isinstance(b, Tensor):
        z = (a.mean - b) / (a.variance / DRAWS).sqrt()
    else:
        z = (a.mean - b.mean) / ((a.variance + b.variance) / DRAWS).sqrt()
    assert z.abs().max() < Z_TOL, f"max |z| = {z.abs().max():.2f}"


@pytest.mark.statistical
@pytest.mark.parametrize("control", ["none", "moving-average", "nvil"])
def test_score_gradient_is_unbiased_for_the_closed_form_elbo_gradient(
    ppca: LinearGaussian, x: Tensor, params: Tensor, control: str
) -> None:
    exact = grads(linear_gaussian_elbo(ppca, FAMILY(params), x), [params])[0]
    baseline = {"none": lambda: None, "moving-average": lambda: _warm_moving_average(ppca, x, params),
                "nvil": lambda: _trained_nvil(ppca, x, params)}[control]()  # fmt: skip
    _assert_same_mean(_moments(lambda q: score_terms(ppca, q, x, baseline=baseline).value, params), exact)


@pytest.mark.statistical
def test_stl_gradient_is_unbiased_for_the_closed_form_elbo_gradient(
    ppca: LinearGaussian, x: Tensor, params: Tensor
) -> None:
    exact = grads(linear_gaussian_elbo(ppca, FAMILY(params), x), [params])[0]
    _assert_same_mean(_moments(lambda q: stl_terms(ppca, q, x).value, params), exact)


@pytest.mark.statistical
@pytest.mark.parametrize("estimator", [vimco_terms, dreg_terms])
def test_multi_sample_estimators_match_the_reparameterised_iwae_gradient(
    ppca: LinearGaussian, x: Tensor, params: Tensor, estimator: Callable[..., Terms]
) -> None:
    reference = _moments(lambda q: iwae_terms(ppca, q, x, k=5).value, params)
    _assert_same_mean(_moments(lambda q: estimator(ppca, q, x, k=5).value, params), reference)


@pytest.mark.statistical
def test_control_variates_reduce_the_score_gradient_variance(ppca: LinearGaussian, x: Tensor, params: Tensor) -> None:
    # Measured (total variance over the 50 components, ratio to plain REINFORCE), with this
    # seed and, in brackets, global seeds 1, 2, 3: moving average 4.4 (4.7, 4.6, 3.7), NVIL 5.5
    # (5.3, 4.4, 4.5), VIMCO against REINFORCE on IWAE-5 83 (93, 81, 90). The relative standard
    # error of a sample variance from 500 draws is about sqrt(2 / 499) = 6% for Gaussian draws
    # (more for heavy tails); the bounds sit at about half the smallest factor measured.
    plain = _moments(lambda q: score_terms(ppca, q, x).value, params).total_variance
    average = _warm_moving_average(ppca, x, params)
    moving = _moments(lambda q: score_terms(ppca, q, x, baseline=average).value, params).total_variance
    nvil = _trained_nvil(ppca, x, params)
    learned = _moments(lambda q: score_terms(ppca, q, x, baseline=nvil).value, params).total_variance
    plain_iwae = _moments(lambda q: _score_iwae(ppca, q, x, 5), params).total_variance
    vimco = _moments(lambda q: vimco_terms(ppca, q, x, k=5).value, params).total_variance
    assert plain / moving > 2.0
    assert plain / learned > 2.0
    assert plain_iwae / vimco > 40.0


def test_stl_gradient_vanishes_at_the_exact_posterior(ppca: LinearGaussian, x: Tensor) -> None:
    # With q = p(z|x), log p(x, z) - log q(z) = log p(x) for every z: the path derivative is 0
    # on every draw, while the reparameterised ELBO gradient keeps the zero-mean score term.
    exact = off_posterior_params(ppca, x, shift=0.0, stretch=1.0).requires_grad_(True)
    stl = grads(stl_terms(ppca, FAMILY(exact), x, num_samples=3).value, [exact])[0]
    torch.testing.assert_close(stl, torch.zeros_like(stl), atol=1e-9, rtol=0)
    reparam = grads(elbo_terms(ppca, FAMILY(exact), x, num_samples=3).value, [exact])[0]
    assert reparam.abs().max() > 1e-3


def test_values_are_the_bounds_and_model_gradients_the_usual_ones(
    trainable_ppca: LinearGaussian, x: Tensor, params: Tensor
) -> None:
    # Same seed, same draws (sample and rsample draw the same noise): each surrogate's value is
    # its bound's estimate and, as z does not depend on the model, so is the model's gradient.
    model_params = list(trainable_ppca.parameters())
    pairs = [
        (lambda q: score_terms(trainable_ppca, q, x, num_samples=3, baseline=MovingAverageBaseline()),
         lambda q: elbo_terms(trainable_ppca, q, x, num_samples=3)),
        (lambda q: stl_terms(trainable_ppca, q, x, num_samples=3),
         lambda q: elbo_terms(trainable_ppca, q, x, num_samples=3)),
        (lambda q: vimco_terms(trainable_ppca, q, x, k=4), lambda q: iwae_terms(trainable_ppca, q, x, k=4)),
        (lambda q: dreg_terms(trainable_ppca, q, x, k=4), lambda q: iwae_terms(trainable_ppca, q, x, k=4)),
    ]  # fmt: skip
    for estimator, bound in pairs:
        torch.manual_seed(3)
        value = estimator(FAMILY(params)).value
        torch.manual_seed(3)
        reference = bound(FAMILY(params)).value
        torch.testing.assert_close(value, reference)
        for a, b in zip(grads(value, model_params), grads(reference, model_params)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["score", "moving-average", "nvil", "vimco", "stl", "dreg"])
def test_every_encoder_parameter_gets_a_gradient(ppca: LinearGaussian, x: Tensor, name: str) -> None:
    posterior = AmortizedPosterior(mlp_encoder(5, (8,), FAMILY.param_size), FAMILY).double()
    nvil = NVILBaseline(5).double()
    estimator = {
        "score": lambda q: score_terms(ppca, q, x),
        "moving-average": lambda q: score_terms(ppca, q, x, baseline=MovingAverageBaseline()),
        "nvil": lambda q: score_terms(ppca, q, x, baseline=nvil),
        "vimco": lambda q: vimco_terms(ppca, q, x, k=3),
        "stl": lambda q: stl_terms(ppca, q, x),
        "dreg": lambda q: dreg_terms(ppca, q, x, k=3),
    }[name]
    trained = list(posterior.parameters()) + (list(nvil.net.parameters()) if name == "nvil" else [])
    for g in grads(estimator(posterior(x)).value, trained):
        assert g.abs().sum() > 0


def test_moving_average_tracks_the_signal() -> None:
    baseline = MovingAverageBaseline(decay=0.5)
    x = torch.zeros(2, 1)
    assert baseline(x).tolist() == [0.0, 0.0]
    baseline.update(torch.tensor(3.0))
    assert baseline(x).tolist() == [3.0, 3.0]
    baseline.update(torch.tensor(5.0))
    assert baseline(x).tolist() == [4.0, 4.0]


def test_bad_input_is_a_config_error(ppca: LinearGaussian, x: Tensor, params: Tensor) -> None:
    with pytest.raises(ConfigError, match="k >= 2"):
        vimco_terms(ppca, FAMILY(params), x, k=1)
    with pytest.raises(ConfigError, match="decay"):
        MovingAverageBaseline(decay=1.0)
    with pytest.raises(ConfigError, match="Gaussian family"):
        stop_gradient(torch.distributions.Categorical(logits=torch.zeros(3)))


def test_the_estimator_picks_the_surrogate(ppca: LinearGaussian, x: Tensor, params: Tensor) -> None:
    # each value computes its estimator's terms: the same numbers from the same noise
    nvil = NVILBaseline(5).double()
    pairs = [
        (ELBO(estimator="score", num_samples=2), lambda q: score_terms(ppca, q, x, num_samples=2), None),
        (ELBO(estimator="nvil"), lambda q: score_terms(ppca, q, x, baseline=nvil), nvil),
        (IWAE(estimator="dreg", k=3), lambda q: dreg_terms(ppca, q, x, k=3), None),
        (IWAE(estimator="vimco", k=3), lambda q: vimco_terms(ppca, q, x, k=3), None),
        (ELBO(estimator="stl"), lambda q: stl_terms(ppca, q, x), None),
    ]
    for objective, terms, state in pairs:
        torch.manual_seed(4)
        value = objective(ppca, FAMILY(params), x, state=state).value
        torch.manual_seed(4)
        torch.testing.assert_close(value, terms(FAMILY(params)).value)
    assert isinstance(ELBO(estimator="score-baseline").init_state(5), MovingAverageBaseline)
    assert isinstance(ELBO(estimator="nvil").init_state(5), NVILBaseline)
    assert ELBO(estimator="score").init_state(5) is None and IWAE().init_state(5) is None
    with pytest.raises(ConfigError, match="the nvil estimator needs its state"):
        ELBO(estimator="nvil")(ppca, FAMILY(params), x)


def test_values_check_their_estimator_and_family() -> None:
    gumbel = ELBO(estimator="gumbel", temperature=0.3, straight_through=True)
    assert (gumbel.temperature, gumbel.straight_through) == (0.3, True)
    for make, message in [
        (lambda: ELBO(estimator="vimco"), "does not apply to objective 'elbo'"),
        (lambda: objective_named("rws", estimator="score"), "does not apply to objective 'rws'"),
        (lambda: ELBO(estimator="gumbel", temperature=0.0), "temperature must be positive"),
        (lambda: ELBO(estimator="magic"), "estimator 'magic' does not apply"),
        (lambda: objective_named("magic"), "unknown objective"),
    ]:
        with pytest.raises(ConfigError, match=message):
            make()
    for objective in (ELBO(), ELBO(estimator="stl"), IWAE(estimator="dreg")):
        with pytest.raises(ConfigError, match="reparameterised estimator asked for a discrete family"):
            objective.check_family(discrete=True)
    for objective in (ELBO(estimator="score"), IWAE(estimator="vimco"), RWS()):
        objective.check_family(discrete=True)
    with pytest.raises(ConfigError, match="needs a model with discrete latents"):
        gumbel.check_family(discrete=False)


@pytest.mark.parametrize("estimator", [("elbo", "score-baseline"), ("elbo", "stl"), ("iwae", "vimco"), ("iwae", "dreg")])
@pytest.mark.parametrize("strategy", ["per-datapoint", "amortized"])
def test_fit_with_each_estimator_approaches_the_posterior(
    ppca: LinearGaussian, ppca_x: Tensor, estimator: tuple[str, str], strategy: str
) -> None:
    # 50 points, model fixed, 300 epochs of Adam on batches of 10 from q(z|x) = N(0, I) (a
    # zero affine encoder, or a table of N(0, I)); learning rate 0.02 per point, 0.005 for the
    # encoder (the score-function estimators diverge at 0.1 and 0.02 respectively). The exact
    # mean gap log p(x) - ELBO starts at 34 nats and must end below 2 (measured, per point:
    # 0.6 score-baseline, 0.04 stl, 1.3 vimco, 0.7 dreg; amortized: 0.6, 0.08, 0.25, 0.14;
    # an IWAE-trained q is not the ELBO's optimum, so its gap stays above 0).
    name, chosen = estimator
    if strategy == "per-datapoint":
        posterior: nn.Module = LocalPosterior(50, FAMILY).double()
        lr = 0.02
    else:
        encoder = mlp_encoder(5, (), FAMILY.param_size).double()
        with torch.no_grad():
            encoder[-1].weight.zero_()
            encoder[-1].bias.copy_(FAMILY.initial_params(1)[0])
        posterior, lr = AmortizedPosterior(encoder, FAMILY), 0.005

    def gap() -> float:
        with torch.no_grad():
            q = posterior(ppca_x, torch.arange(50))
            return float((ppca.exact_log_marginal(ppca_x) - linear_gaussian_elbo(ppca, q, ppca_x)).mean())

    before = gap()
    objective = objective_named(name, estimator=chosen, k=5)
    fit(ppca, posterior, Dataset(ppca_x), epochs=300, batch_size=10, lr=lr, local_lr=lr, train_model=False,
        objective=objective, baseline=objective.init_state(5),
        generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert before > 30 and gap() < 2.0, (before, gap())


def test_moving_average_state_follows_the_signal_to_its_device() -> None:
    # init_state builds the baseline on the CPU; with data on a GPU its state moves there
    # instead of being copied back every step (the meta device stands in for the GPU)
    baseline = MovingAverageBaseline()
    baseline.update(torch.ones((), device="meta"))
    assert baseline.value.device.type == "meta" and dict(baseline.named_buffers())["value"] is baseline.value
