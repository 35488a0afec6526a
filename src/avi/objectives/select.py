"""Choosing an objective by name, as the config and CLI do."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.bounds import Terms, elbo_terms, iwae_terms

__all__ = ["OBJECTIVES", "Objective", "make_objective"]

Objective = Callable[[LatentVariableModel, Distribution, Tensor], Terms]
OBJECTIVES = ("elbo", "iwae")


def make_objective(name: str, *, num_samples: int = 1, k: int = 5, analytic_kl: bool = True) -> Objective:
    """``elbo`` (S = ``num_samples``, analytic KL where torch has it) or ``iwae`` (k samples)."""
    if name == "elbo":
        return partial(elbo_terms, num_samples=num_samples, analytic_kl=analytic_kl)
    if name == "iwae":
        return partial(iwae_terms, k=k)
    raise ConfigError(f"unknown objective {name!r}; choose from {list(OBJECTIVES)}")
