"""The objectives a config names: one registration per objective value.

A new objective is a frozen dataclass subclassing :class:`~avi.objectives.objective.Objective`
in a file of its own, with a ``name`` (and its ``estimators``); adding its class to
:data:`OBJECTIVES` makes it a config's ``objective.name``, and its fields settings of
``objective.*``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from avi.errors import ConfigError
from avi.objectives.cubo import CUBO
from avi.objectives.elbo_objective import ELBO
from avi.objectives.iwae import IWAE
from avi.objectives.objective import Objective, check_estimator
from avi.objectives.renyi import Renyi
from avi.objectives.rws import RWS

__all__ = ["ESTIMATORS", "OBJECTIVES", "Objective", "objective_named", "takes"]

#: the objective values by name, in the order a config lists them
OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (ELBO, IWAE, Renyi, CUBO, RWS)}
#: every gradient estimator of some objective, ``reparam`` first
ESTIMATORS: tuple[str, ...] = tuple(dict.fromkeys(e for cls in OBJECTIVES.values() for e in cls.estimators))


def takes(name: str, setting: str) -> bool:
    """Whether objective ``name`` has the setting (a field of its value)."""
    cls = OBJECTIVES.get(name)
    return cls is not None and setting in {f.name for f in fields(cls)}  # type: ignore[arg-type]


def objective_named(name: str, **settings: Any) -> Objective:
    """The objective ``name`` made from those of ``settings`` that are its fields (the others
    ignored, so that a config's flat section serves every objective); ``settings["estimator"]``
    must be one of its estimators. Raises :class:`ConfigError` as the value does.

    Example:
        >>> objective_named("iwae", k=3, num_samples=1)
        IWAE(k=3, estimator='reparam')
    """
    cls = OBJECTIVES.get(name)
    if cls is None:
        raise ConfigError(f"unknown objective {name!r}; choose from {list(OBJECTIVES)}")
    check_estimator(name, cls.estimators, settings.get("estimator", "reparam"))
    return cls(**{k: v for k, v in settings.items() if takes(name, k)})
