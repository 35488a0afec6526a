"""Evaluation: bounds and importance-sampled log-likelihood over data sets."""

from avi.evaluation.bounds import LogLikelihood, elbo_per_point, log_likelihood, mean_elbo

__all__ = ["LogLikelihood", "elbo_per_point", "log_likelihood", "mean_elbo"]
