"""Generative models p(x, z) = p(z) p(x|z)."""

from avi.models.base import LatentVariableModel
from avi.models.discrete import CategoricalVAE, GaussianMixture, SigmoidBeliefNet
from avi.models.lda import AVITM, LDA, synthetic_corpus
from avi.models.linear_gaussian import LinearGaussian, ppca_max_log_likelihood
from avi.models.vae import VAEModel

__all__ = [
    "AVITM",
    "LDA",
    "CategoricalVAE",
    "GaussianMixture",
    "LatentVariableModel",
    "LinearGaussian",
    "SigmoidBeliefNet",
    "VAEModel",
    "ppca_max_log_likelihood",
    "synthetic_corpus",
]
