"""Objectives: values called as ``objective(model, q, x)``, returning per-data-point terms."""

from avi.objectives.batch import BatchMean, local_mean
from avi.objectives.bounds import Terms, elbo, elbo_terms, iwae_bound, iwae_terms, log_weights
from avi.objectives.consistency import Consistency
from avi.objectives.cubo import CUBO, cubo, cubo_terms
from avi.objectives.elbo_objective import ELBO
from avi.objectives.estimators import (
    MovingAverageBaseline,
    NVILBaseline,
    dreg_terms,
    gumbel_terms,
    score_terms,
    stl_terms,
    vimco_terms,
)
from avi.objectives.iwae import IWAE
from avi.objectives.objective import Objective, Wrapper
from avi.objectives.renyi import Renyi, log_power_mean, renyi_bound, renyi_terms
from avi.objectives.rws import RWS, rws_terms
from avi.objectives.schedules import KLSchedule
from avi.objectives.select import OBJECTIVES, objective_named
from avi.objectives.tempered import Tempered
from avi.objectives.weighted import WeightedKL

__all__ = [
    "CUBO",
    "ELBO",
    "IWAE",
    "OBJECTIVES",
    "RWS",
    "BatchMean",
    "Consistency",
    "KLSchedule",
    "MovingAverageBaseline",
    "NVILBaseline",
    "Objective",
    "Renyi",
    "Tempered",
    "Terms",
    "WeightedKL",
    "Wrapper",
    "cubo",
    "cubo_terms",
    "dreg_terms",
    "elbo",
    "elbo_terms",
    "gumbel_terms",
    "iwae_bound",
    "iwae_terms",
    "local_mean",
    "log_power_mean",
    "log_weights",
    "objective_named",
    "renyi_bound",
    "renyi_terms",
    "rws_terms",
    "score_terms",
    "stl_terms",
    "vimco_terms",
]
