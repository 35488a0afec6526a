"""Objectives as values: each validates itself in one line, its estimator state is the caller's
(the call never changes it), wrappers share their base's state, and the registry is what a
config's objective section is made from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families import make_family
from avi.models import LinearGaussian
from avi.models.base import LatentVariableModel
from avi.objectives import CUBO, ELBO, IWAE, OBJECTIVES, RWS, Consistency, Objective, Renyi, Terms, WeightedKL
from avi.objectives.batch import BatchMean, local_mean
from avi.objectives.bounds import elbo_terms
from avi.objectives.select import ESTIMATORS, objective_named, takes
from avi.runs.config import ObjectiveConfig, load_config
from tests.objectives.common import off_posterior_params

FAMILY = make_family("full-rank", 2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: IWAE(k=0), "k must be a positive integer, got 0"),
        (lambda: ELBO(num_samples=0), "num_samples must be a positive integer, got 0"),
        (lambda: Renyi(alpha=math.nan), "the Renyi alpha must be a finite number"),
        (lambda: Renyi(k=-1), "k must be a positive integer, got -1"),
        (lambda: CUBO(order=1.0), "the CUBO order n must be a finite number greater than 1, got 1.0"),
        (lambda: RWS(k=0), "k must be a positive integer, got 0"),
        (lambda: ELBO(estimator="dreg"), "estimator 'dreg' does not apply to objective 'elbo'"),
        (lambda: IWAE(estimator="nvil"), "estimator 'nvil' does not apply to objective 'iwae'"),
        (lambda: objective_named("cubo", estimator="vimco"), "estimator 'vimco' does not apply to objective 'cubo'"),
        (lambda: IWAE(k=1, estimator="vimco"), "vimco needs k >= 2 samples per point, got 1"),
        (lambda: ELBO(temperature=0.5), "temperature and straight_through belong to the gumbel estimator"),
        (lambda: ELBO(estimator="gumbel", temperature=-1.0), "temperature must be positive"),
    ],
)
def test_each_value_validates_itself_in_one_line(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


def test_values_are_frozen_and_equal_by_settings() -> None:
    assert IWAE(k=3) == IWAE(k=3) != IWAE(k=4)
    with pytest.raises(AttributeError):
        IWAE(k=3).k = 4  # type: ignore[misc]


@pytest.mark.parametrize("objective", [ELBO(estimator="score-baseline"), ELBO(estimator="nvil")])
def test_the_call_leaves_the_state_to_the_caller(ppca: LinearGaussian, ppca_x: Tensor, objective: Objective) -> None:
    x = ppca_x[:10]
    q = FAMILY(off_posterior_params(ppca, x))
    state = objective.init_state(x.shape[1])
    assert state is not None
    state.double()
    before = {k: v.clone() for k, v in state.state_dict().items()}
    for _ in range(2):  # calling twice changes nothing: no update inside the objective
        terms = objective(ppca, q, x, state=state)
        for k, v in state.state_dict().items():
            torch.testing.assert_close(v, before[k], equal_nan=True, rtol=0, atol=0)
    assert terms.signal is not None and terms.signal.shape == (1, 10) and not terms.signal.requires_grad
    objective.update_state(state, terms)  # the caller's update: b moves to the batch mean of the signal
    assert state(x)[0].item() != 0.0
    average = state if objective.estimator == "score-baseline" else state.centre
    assert average.value.item() == pytest.approx(terms.signal.mean().item())


def test_update_state_reads_the_batch_mean_it_is_given(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    objective = ELBO(estimator="score-baseline")
    state = objective.init_state(5)
    terms = objective(ppca, FAMILY(off_posterior_params(ppca, ppca_x[:10])), ppca_x[:10], state=state)
    objective.update_state(state, terms, lambda v: torch.full_like(v[0], 7.0))  # a global mean, say
    assert state.value.item() == 7.0


def test_wrappers_share_their_base_state_and_keep_its_signal(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    base = ELBO(estimator="nvil")
    posterior = lambda x: FAMILY(off_posterior_params(ppca, x))  # noqa: E731
    wrapped = Consistency(base, posterior, lambda x: x + 0.1, weight=0.5)
    state = wrapped.init_state(5)
    assert type(state).__name__ == "NVILBaseline"
    terms = wrapped(ppca, posterior(ppca_x[:10]), ppca_x[:10], state=state.double())
    assert terms.signal is not None
    assert not wrapped.reparameterised and WeightedKL(ELBO()).init_state(5) is None


def test_the_config_section_is_made_from_the_registry() -> None:
    assert list(OBJECTIVES) == ["elbo", "iwae", "renyi", "cubo", "rws"]
    assert set(ESTIMATORS) == {e for cls in OBJECTIVES.values() for e in cls.estimators}
    annotation = ObjectiveConfig.model_fields["name"].annotation
    assert annotation.__args__ == tuple(OBJECTIVES)  # type: ignore[union-attr]
    assert takes("renyi", "alpha") and takes("iwae", "k") and not takes("elbo", "k")
    config = load_config(None, {"objective": {"name": "cubo", "cubo_order": 3.0, "k": 2}})
    assert config.objective.value() == CUBO(order=3.0, k=2)
    assert load_config(None, {"objective": {"estimator": "nvil"}}).objective.value() == ELBO(estimator="nvil")


@dataclass(frozen=True)
class _HalfELBO(Objective):
    """A newcomer's objective: one class (here in a test), one registration."""

    name: ClassVar[str] = "half-elbo"

    num_samples: int = 1

    def __call__(
        self,
        model: LatentVariableModel,
        q: Distribution,
        x: Tensor,
        *,
        state: nn.Module | None = None,
        batch_mean: BatchMean = local_mean,
    ) -> Terms:
        terms = elbo_terms(model, q, x, num_samples=self.num_samples)
        return terms._replace(value=terms.value / 2)


def test_a_new_objective_needs_one_class_and_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OBJECTIVES, _HalfELBO.name, _HalfELBO)
    objective = objective_named("half-elbo", num_samples=2, k=5, estimator="reparam")
    assert objective == _HalfELBO(num_samples=2) and takes("half-elbo", "num_samples")
    with pytest.raises(ConfigError, match="estimator 'score' does not apply to objective 'half-elbo'"):
        objective_named("half-elbo", estimator="score")
