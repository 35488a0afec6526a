"""Evaluation: bounds and importance-sampled log-likelihood over data sets, the gap decomposition."""

from avi.evaluation.ais import ais_log_likelihood
from avi.evaluation.bounds import LogLikelihood, cubo_per_point, elbo_per_point, log_likelihood, mean_elbo
from avi.evaluation.collapse import active_units, posterior_mean_variance
from avi.evaluation.enumeration import EnumeratedBounds, enumerated_bounds
from avi.evaluation.gaps import GapDecomposition, gap_decomposition
from avi.evaluation.gradients import GradientMoments, gradient_moments

__all__ = [
    "EnumeratedBounds",
    "GapDecomposition",
    "GradientMoments",
    "LogLikelihood",
    "active_units",
    "ais_log_likelihood",
    "cubo_per_point",
    "elbo_per_point",
    "enumerated_bounds",
    "gap_decomposition",
    "gradient_moments",
    "log_likelihood",
    "mean_elbo",
    "posterior_mean_variance",
]
