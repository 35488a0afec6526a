"""Generative models p(x, z) = p(z) p(x|z)."""

from avi.models.base import LatentVariableModel
from avi.models.bernoulli import FactorisedBernoulli, bernoulli_log_prob, factorised_bernoulli
from avi.models.discrete import CategoricalVAE, GaussianMixture, SigmoidBeliefNet
from avi.models.hierarchical import GaussianChain, HierarchicalVAE, latent_layers
from avi.models.lda import AVITM, LDA, synthetic_corpus
from avi.models.linear_gaussian import LinearGaussian, ppca_max_log_likelihood
from avi.models.priors import MixtureOfGaussians, MoGPrior, VampPrior
from avi.models.vae import VAEModel

__all__ = [
    "AVITM",
    "LDA",
    "CategoricalVAE",
    "FactorisedBernoulli",
    "GaussianChain",
    "GaussianMixture",
    "HierarchicalVAE",
    "LatentVariableModel",
    "LinearGaussian",
    "MixtureOfGaussians",
    "MoGPrior",
    "SigmoidBeliefNet",
    "VAEModel",
    "VampPrior",
    "bernoulli_log_prob",
    "factorised_bernoulli",
    "latent_layers",
    "ppca_max_log_likelihood",
    "synthetic_corpus",
]
