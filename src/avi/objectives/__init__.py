"""Objectives: pure functions of (model, q, x) returning per-data-point values."""

from avi.objectives.bounds import Terms, elbo, elbo_terms, iwae_bound, iwae_terms, log_weights
from avi.objectives.select import OBJECTIVES, Objective, make_objective

__all__ = ["OBJECTIVES", "Objective", "Terms", "elbo", "elbo_terms", "iwae_bound", "iwae_terms", "log_weights", "make_objective"]
