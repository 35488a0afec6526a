"""Choosing an objective by name, as the config and CLI do."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.bounds import Terms, elbo_terms, iwae_terms
from avi.objectives.cubo import check_order, cubo_terms
from avi.objectives.renyi import check_alpha, renyi_terms
from avi.objectives.rws import rws_terms

__all__ = ["OBJECTIVES", "Objective", "make_objective"]

Objective = Callable[[LatentVariableModel, Distribution, Tensor], Terms]
OBJECTIVES = ("elbo", "iwae", "renyi", "cubo", "rws")


def make_objective(
    name: str,
    *,
    num_samples: int = 1,
    k: int = 5,
    analytic_kl: bool = True,
    alpha: float = 0.5,
    cubo_order: float = 2.0,
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
    """
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
    if name == "rws":
        return partial(rws_terms, k=k)
    raise ConfigError(f"unknown objective {name!r}; choose from {list(OBJECTIVES)}")
