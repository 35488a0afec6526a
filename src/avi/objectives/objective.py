"""An objective is a value: a frozen dataclass that validates itself when made and is called as
``objective(model, q, x) -> Terms`` (per-point values (B,)), as NumPyro's ``RenyiELBO(alpha=...)``.

An estimator with state (a score-function baseline) keeps none in the value: the caller makes
it with ``init_state(data_dim)``, passes it to each call (``state=``) and, after the step, calls
``update_state(state, terms, batch_mean)`` with the call's :class:`Terms`. Statistics over the
batch go through ``batch_mean`` (:mod:`avi.objectives.batch`), which the caller chooses: under
data parallelism, the global batch's mean. The call itself has no side effect, so calling an
objective twice gives the same numbers for the same noise.

A wrapper (:class:`Wrapper`: the weighted KL of the collapse remedies, consistency
regularisation) changes another objective's value and shares its state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.batch import BatchMean, local_mean
from avi.objectives.bounds import Terms

__all__ = ["Objective", "Stateless", "Wrapper", "check_estimator"]


def check_estimator(name: str, estimators: tuple[str, ...], estimator: str) -> None:
    """Raise :class:`ConfigError` unless ``estimator`` is one of objective ``name``'s ``estimators``."""
    if estimator not in estimators:
        raise ConfigError(
            f"estimator {estimator!r} does not apply to objective {name!r}; choose from {list(estimators)}"
        )


class Objective(ABC):
    """The interface of every objective value (subclasses are frozen dataclasses).

    ``name`` is the objective's name in a config (:data:`avi.objectives.select.OBJECTIVES`) and
    ``estimators`` the gradient estimators it has, ``reparam`` first; an objective with a choice
    of estimator has an ``estimator`` field, checked against them when the value is made.
    """

    name: ClassVar[str] = ""
    estimators: ClassVar[tuple[str, ...]] = ("reparam",)

    def __post_init__(self) -> None:
        check_estimator(self.name, self.estimators, getattr(self, "estimator", "reparam"))

    @abstractmethod
    def __call__(
        self,
        model: LatentVariableModel,
        q: Distribution,
        x: Tensor,
        *,
        state: nn.Module | None = None,
        batch_mean: BatchMean = local_mean,
    ) -> Terms:
        """Per-point :class:`Terms` (B,) for x: (B, D) under q (batch (B,)); no side effects."""

    def init_state(self, data_dim: int) -> nn.Module | None:
        """The estimator's state for data of dimension ``data_dim``, owned by the caller (a
        module: saved with ``state_dict``, its parameters trained with the posterior's), or None."""
        return None

    def update_state(self, state: nn.Module | None, terms: Terms, batch_mean: BatchMean = local_mean) -> None:
        """Update ``state`` from the ``terms`` of the step that used it (after that step)."""
        return None

    @property
    def reparameterised(self) -> bool:
        """Whether the gradient flows through z ~ q (q must have ``rsample``: not a discrete family)."""
        return True

    @property
    def needs_gaussian(self) -> bool:
        """Whether the estimator cuts q's parameters from the graph (``stop_gradient``), which
        is defined for the Gaussian families only."""
        return False

    def check_family(self, *, discrete: bool) -> None:
        """Raise :class:`ConfigError` unless the objective trains a (``discrete`` or not) family."""
        if discrete and self.reparameterised:
            raise ConfigError(
                "reparameterised estimator asked for a discrete family "
                f"({getattr(self, 'estimator', 'reparam')!r}); use score, score-baseline, nvil or gumbel with the "
                "elbo objective, vimco with iwae, or the rws objective"
            )


class Stateless(Objective):
    """An objective whose estimator has no state and reads no batch statistics: it defines
    :meth:`terms`, and the call's ``state`` and ``batch_mean`` do not reach it."""

    def __call__(
        self,
        model: LatentVariableModel,
        q: Distribution,
        x: Tensor,
        *,
        state: nn.Module | None = None,
        batch_mean: BatchMean = local_mean,
    ) -> Terms:
        return self.terms(model, q, x)

    @abstractmethod
    def terms(self, model: LatentVariableModel, q: Distribution, x: Tensor) -> Terms:
        """Per-point :class:`Terms` (B,) for x: (B, D) under q (batch (B,))."""


@dataclass(frozen=True)
class Wrapper(Objective):
    """An objective that changes the value of ``base``; its estimator and state are the base's."""

    base: Objective

    def init_state(self, data_dim: int) -> nn.Module | None:
        return self.base.init_state(data_dim)

    def update_state(self, state: nn.Module | None, terms: Terms, batch_mean: BatchMean = local_mean) -> None:
        self.base.update_state(state, terms, batch_mean)

    @property
    def reparameterised(self) -> bool:
        return self.base.reparameterised

    @property
    def needs_gaussian(self) -> bool:
        return self.base.needs_gaussian

    def check_family(self, *, discrete: bool) -> None:
        self.base.check_family(discrete=discrete)
