"""Choosing an objective by name, as the config and CLI do."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.families.discrete import check_temperature
from avi.models.base import LatentVariableModel
from avi.objectives.bounds import Terms, elbo_terms, iwae_terms
from avi.objectives.cubo import check_order, cubo_terms
from avi.objectives.estimators import (
    MovingAverageBaseline,
    dreg_terms,
    gumbel_terms,
    score_terms,
    stl_terms,
    vimco_terms,
)
from avi.objectives.renyi import check_alpha, renyi_terms
from avi.objectives.rws import rws_terms

__all__ = ["ESTIMATORS", "OBJECTIVES", "REPARAMETERISED", "Objective", "check_estimator", "make_objective"]

Objective = Callable[[LatentVariableModel, Distribution, Tensor], Terms]
OBJECTIVES = ("elbo", "iwae", "renyi", "cubo", "rws")
ESTIMATORS = ("reparam", "score", "score-baseline", "nvil", "vimco", "stl", "dreg", "gumbel")
#: the estimators each objective has besides ``reparam`` (see :mod:`avi.objectives.estimators`)
_ESTIMATORS_OF = {"elbo": ("score", "score-baseline", "nvil", "stl", "gumbel"), "iwae": ("vimco", "dreg")}
#: the estimators that differentiate through z ~ q (q must have ``rsample``: not a discrete family)
REPARAMETERISED = ("reparam", "stl", "dreg")
#: objectives whose one estimator draws z without a gradient path (``q.sample``): any family
_SAMPLE_ONLY = ("rws",)


def check_estimator(objective: str, estimator: str, *, discrete: bool | None = None) -> None:
    """Raise :class:`ConfigError` unless ``estimator`` is a gradient estimator of ``objective``
    and, where ``discrete`` says whether the family is discrete (None: unknown), of that family:
    a discrete family has no reparameterised samples, and ``gumbel`` needs one."""
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown gradient estimator {estimator!r}; choose from {list(ESTIMATORS)}")
    if discrete and estimator in REPARAMETERISED and objective not in _SAMPLE_ONLY:
        raise ConfigError(
            f"reparameterised estimator asked for a discrete family ({estimator!r}); use score, score-baseline, "
            "nvil or gumbel with the elbo objective, vimco with iwae, or the rws objective"
        )
    if discrete is False and estimator == "gumbel":
        raise ConfigError("the gumbel estimator needs a model with discrete latents (model discrete-vae or sbn)")
    if estimator != "reparam" and estimator not in _ESTIMATORS_OF.get(objective, ()):
        raise ConfigError(
            f"estimator {estimator!r} does not apply to objective {objective!r}; "
            f"choose from {['reparam', *_ESTIMATORS_OF.get(objective, ())]}"
        )


def make_objective(
    name: str,
    *,
    num_samples: int = 1,
    k: int = 5,
    analytic_kl: bool = True,
    alpha: float = 0.5,
    cubo_order: float = 2.0,
    estimator: str = "reparam",
    baseline: nn.Module | None = None,
    temperature: float = 1.0,
    straight_through: bool = False,
) -> Objective:
    """The training objective ``name``; every one but ``elbo`` uses k samples per point.

    - ``elbo``: S = ``num_samples`` samples, analytic KL where torch has it.
    - ``iwae``: the IWAE bound (Burda et al. 2016).
    - ``renyi``: the VR bound of order ``alpha`` (Li and Turner 2016; 1 is the ELBO, 0 IWAE).
    - ``cubo``: value -CUBO_n, n = ``cubo_order``: q minimises the chi upper bound, the model
      follows the IWAE gradient of the same samples (Dieng et al. 2017; see
      :func:`avi.objectives.cubo.cubo_terms`).
    - ``rws``: reweighted wake-sleep, value the IWAE bound, q trained on the inclusive KL
      (Bornschein and Bengio 2015; Le et al. 2019; see :func:`avi.objectives.rws.rws_terms`).

    ``estimator`` picks the gradient (:mod:`avi.objectives.estimators`): ``reparam`` (the
    reparameterisation trick) for all; for ``elbo`` also ``score`` (REINFORCE),
    ``score-baseline`` (with a moving-average baseline), ``nvil`` (with a learned baseline
    network), ``stl`` (sticking the landing) and ``gumbel`` (categorical or Bernoulli q relaxed at
    ``temperature``, hard samples with ``straight_through``); for ``iwae`` also ``vimco`` and
    ``dreg``. A discrete family trains with the score-function estimators, ``gumbel``, ``vimco``
    or the ``rws`` objective (which never differentiates through z).
    ``baseline`` is the state of ``score-baseline`` (a fresh :class:`MovingAverageBaseline` by
    default, bound into the returned objective) and, required, the :class:`NVILBaseline` of
    ``nvil``, whose parameters the caller must optimise with the posterior's.
    """
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose from {list(OBJECTIVES)}")
    check_estimator(name, estimator)
    if estimator in ("score", "score-baseline", "nvil"):
        if estimator == "score-baseline":
            baseline = baseline if baseline is not None else MovingAverageBaseline()
        elif estimator == "nvil" and baseline is None:
            raise ConfigError(
                "the nvil estimator needs a baseline network (an NVILBaseline) trained with the posterior"
            )
        return partial(score_terms, num_samples=num_samples, baseline=baseline if estimator != "score" else None)
    if estimator == "stl":
        return partial(stl_terms, num_samples=num_samples)
    if estimator == "gumbel":
        check_temperature(temperature)
        return partial(
            gumbel_terms, temperature=temperature, straight_through=straight_through, num_samples=num_samples
        )
    if estimator == "vimco":
        return partial(vimco_terms, k=k)
    if estimator == "dreg":
        return partial(dreg_terms, k=k)
    if name == "elbo":
        return partial(elbo_terms, num_samples=num_samples, analytic_kl=analytic_kl)
    if name == "iwae":
        return partial(iwae_terms, k=k)
    if name == "renyi":
        check_alpha(alpha)
        return partial(renyi_terms, alpha=alpha, k=k)
    if name == "cubo":
        check_order(cubo_order)
        return partial(cubo_terms, n=cubo_order, k=k)
    return partial(rws_terms, k=k)
