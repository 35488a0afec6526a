"""Objectives: pure functions of (model, q, x) returning per-data-point values."""

from avi.objectives.bounds import Terms, elbo, elbo_terms, iwae_bound, iwae_terms, log_weights
from avi.objectives.cubo import cubo, cubo_terms
from avi.objectives.estimators import (
    MovingAverageBaseline,
    NVILBaseline,
    dreg_terms,
    gumbel_terms,
    score_terms,
    stl_terms,
    vimco_terms,
)
from avi.objectives.renyi import log_power_mean, renyi_bound, renyi_terms
from avi.objectives.rws import rws_terms
from avi.objectives.select import OBJECTIVES, Objective, make_objective

__all__ = [
    "OBJECTIVES",
    "MovingAverageBaseline",
    "NVILBaseline",
    "Objective",
    "Terms",
    "cubo",
    "cubo_terms",
    "dreg_terms",
    "elbo",
    "elbo_terms",
    "gumbel_terms",
    "iwae_bound",
    "iwae_terms",
    "log_power_mean",
    "log_weights",
    "make_objective",
    "renyi_bound",
    "renyi_terms",
    "rws_terms",
    "score_terms",
    "stl_terms",
    "vimco_terms",
]
