"""The ELBO as an objective value, with its gradient estimators.

``ELBO(num_samples=S, analytic_kl=True, estimator="reparam")``: E_q[log p(x|z)] - KL(q || p(z))
with S samples per point (:func:`~avi.objectives.bounds.elbo_terms`). ``estimator`` picks the
gradient (:mod:`avi.objectives.estimators`): ``reparam``; ``score`` (REINFORCE),
``score-baseline`` (a moving-average baseline), ``nvil`` (a learned baseline network), ``stl``
(sticking the landing) and ``gumbel`` (a categorical or Bernoulli q relaxed at ``temperature``,
hard samples with ``straight_through``).

Example:
    >>> ELBO(estimator="nvil").init_state(784).__class__.__name__
    'NVILBaseline'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, cast

from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families.discrete import check_temperature
from avi.models.base import LatentVariableModel
from avi.objectives.batch import BatchMean, local_mean
from avi.objectives.bounds import Terms, check_count, elbo_terms
from avi.objectives.estimators import MovingAverageBaseline, NVILBaseline, gumbel_terms, score_terms, stl_terms
from avi.objectives.objective import Objective

__all__ = ["ELBO"]


@dataclass(frozen=True)
class ELBO(Objective):
    """The ELBO with S = ``num_samples`` samples per point and the gradient ``estimator``.

    ``analytic_kl``: the exact KL where torch knows it (reparam only). ``temperature`` and
    ``straight_through`` belong to ``gumbel``. ``score-baseline`` and ``nvil`` take their state
    (:meth:`init_state`) in each call and leave it to the caller to update (:meth:`update_state`).
    """

    name: ClassVar[str] = "elbo"
    estimators: ClassVar[tuple[str, ...]] = ("reparam", "score", "score-baseline", "nvil", "stl", "gumbel")

    num_samples: int = 1
    analytic_kl: bool = True
    estimator: str = "reparam"
    temperature: float = 1.0
    straight_through: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("num_samples", self.num_samples)
        if self.estimator == "gumbel":
            check_temperature(self.temperature)
        elif self.temperature != 1.0 or self.straight_through:
            raise ConfigError(
                f"temperature and straight_through belong to the gumbel estimator, not {self.estimator!r}"
            )

    def __call__(
        self,
        model: LatentVariableModel,
        q: Distribution,
        x: Tensor,
        *,
        state: nn.Module | None = None,
        batch_mean: BatchMean = local_mean,
    ) -> Terms:
        e, s = self.estimator, self.num_samples
        if e == "reparam":
            return elbo_terms(model, q, x, num_samples=s, analytic_kl=self.analytic_kl)
        if e == "stl":
            return stl_terms(model, q, x, num_samples=s)
        if e == "gumbel":
            return gumbel_terms(
                model, q, x, temperature=self.temperature, straight_through=self.straight_through, num_samples=s
            )
        if e != "score" and state is None:
            raise ConfigError(f"the {e} estimator needs its state: pass state=objective.init_state(data_dim)")
        return score_terms(model, q, x, num_samples=s, baseline=state)

    def init_state(self, data_dim: int) -> nn.Module | None:
        """A :class:`MovingAverageBaseline` for ``score-baseline``, an :class:`NVILBaseline`
        network b(x) for ``nvil`` (its parameters go into the caller's optimiser), else None."""
        if self.estimator == "score-baseline":
            return MovingAverageBaseline()
        if self.estimator == "nvil":
            return NVILBaseline(data_dim)
        return None

    def update_state(self, state: nn.Module | None, terms: Terms, batch_mean: BatchMean = local_mean) -> None:
        """Move the baseline's moving average towards the batch mean of ``terms.signal``."""
        if state is not None and terms.signal is not None:
            baseline = cast("MovingAverageBaseline | NVILBaseline", state)  # made by init_state
            baseline.update(batch_mean(terms.signal.reshape(-1)))

    @property
    def reparameterised(self) -> bool:
        return self.estimator in ("reparam", "stl")

    @property
    def needs_gaussian(self) -> bool:
        return self.estimator == "stl"

    def check_family(self, *, discrete: bool) -> None:
        super().check_family(discrete=discrete)
        if not discrete and self.estimator == "gumbel":
            raise ConfigError("the gumbel estimator needs a model with discrete latents (model discrete-vae or sbn)")
