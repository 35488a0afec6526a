"""Latent Dirichlet allocation (Blei, Ng and Jordan 2003) and its amortized variants, ProdLDA and
NVLDA (Srivastava and Sutton 2017).

LDA with K topics over a vocabulary of V words, for documents d = 1..N given as bag-of-words
count vectors n_d in N^V::

    beta_k ~ Dirichlet(eta 1_V)          (global: the topics)
    theta_d ~ Dirichlet(alpha 1_K)       (local: topic proportions of document d)
    z_dn ~ Categorical(theta_d), w_dn ~ Categorical(beta_{z_dn})

The mean-field family is q(beta_k) = Dir(lambda_k), q(theta_d) = Dir(gamma_d) and
q(z_dn) = Cat(phi_dw) shared by the tokens of one word type w in document d. With
E[log theta_dk] = psi(gamma_dk) - psi(sum_j gamma_dj) and E[log beta_kw] likewise from lambda,
the optimal phi given (gamma, lambda) is phi_dwk ∝ exp(E[log theta_dk] + E[log beta_kw]), and
the ELBO of the token sequences, maximised over phi, is

    L(lambda, gamma) = sum_d [ sum_w n_dw log sum_k exp(E[log theta_dk] + E[log beta_kw])
                               - KL(Dir(gamma_d) || Dir(alpha)) ]
                       - sum_k KL(Dir(lambda_k) || Dir(eta)).

The local coordinate ascent (:meth:`LDA.local_step`) alternates phi and
gamma_d = alpha + sum_w n_dw phi_dw; the global optimum given phi is
lambda_kw = eta + sum_d n_dw phi_dwk. Inference: :mod:`avi.inference.svi`.

The amortized variant (:class:`AVITM`, Srivastava and Sutton 2017) sums out z, replaces the
Dirichlet prior on theta by its Laplace approximation in the softmax basis, theta = softmax(z),
z ~ N(mu, diag(sigma^2)), point-estimates the topics, and learns an encoder from a document's
counts to q(z_d): a :class:`~avi.models.base.LatentVariableModel` fitted with
:class:`~avi.encoders.AmortizedPosterior` and :func:`avi.inference.fit`. ProdLDA, its
product-of-experts decoder softmax(theta^T beta), is the default; NVLDA keeps LDA's mixture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Dirichlet, Distribution, Independent, Multinomial, Normal, kl_divergence

from avi.errors import ConfigError, DataError
from avi.models.base import LatentVariableModel

__all__ = [
    "AVITM",
    "DECODERS",
    "LDA",
    "Corpus",
    "LocalFit",
    "check_counts",
    "expected_log_dirichlet",
    "laplace_dirichlet_prior",
    "synthetic_corpus",
]


class Corpus(NamedTuple):
    """Documents as word counts (N, V), float64, with the topics (K, V) and proportions (N, K)
    that generated them."""

    counts: Tensor
    topics: Tensor
    proportions: Tensor


def synthetic_corpus(
    num_docs: int,
    vocab_size: int,
    num_topics: int,
    *,
    doc_length: int = 100,
    alpha: float = 0.1,
    eta: float = 0.1,
    seed: int = 0,
) -> Corpus:
    """Draw a corpus from LDA: topics beta_k ~ Dir(eta), theta_d ~ Dir(alpha), document lengths
    N_d ~ 1 + Poisson(doc_length - 1), counts n_d ~ Multinomial(N_d, theta_d^T beta).

    numpy's generator seeded with ``seed`` draws everything (torch has no Dirichlet sampler that
    takes an explicit generator), so a seed gives the same corpus on every machine.
    """
    sizes = {"num_docs": num_docs, "vocab_size": vocab_size, "num_topics": num_topics, "doc_length": doc_length}
    for name, value in sizes.items():
        if value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    _check_concentration("alpha", alpha)
    _check_concentration("eta", eta)
    rng = np.random.default_rng(seed)
    topics = rng.dirichlet(np.full(vocab_size, eta), size=num_topics)
    proportions = rng.dirichlet(np.full(num_topics, alpha), size=num_docs)
    lengths = 1 + rng.poisson(doc_length - 1, size=num_docs)
    word_probs = proportions @ topics
    word_probs /= word_probs.sum(1, keepdims=True)
    counts = rng.multinomial(lengths, word_probs)
    return Corpus(*(torch.as_tensor(a, dtype=torch.float64) for a in (counts, topics, proportions)))


def _check_concentration(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"the Dirichlet concentration {name} must be positive, got {value}")


def check_counts(counts: Tensor, vocab_size: int, name: str = "counts") -> None:
    """Raise :class:`DataError` unless ``counts`` is (N, vocab_size) of non-negative finite
    floating-point numbers (the variational updates keep their dtype)."""
    if not counts.is_floating_point():
        raise DataError(f"{name} must be floating point (float32 or float64), got {counts.dtype}: pass counts.double()")
    if counts.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (documents, {vocab_size} words), got shape {tuple(counts.shape)}")
    if counts.shape[1] != vocab_size:
        raise DataError(f"{name} has a vocabulary of {counts.shape[1]} words but the model has {vocab_size}")
    if not torch.isfinite(counts).all():
        raise DataError(f"{name} contains NaN or infinite values")
    if (counts < 0).any():
        raise DataError(f"{name} contains negative word counts")


def expected_log_dirichlet(concentration: Tensor) -> Tensor:
    """E[log x] under x ~ Dir(c), row-wise: psi(c) - psi(sum c), same shape as ``concentration``."""
    return torch.digamma(concentration) - torch.digamma(concentration.sum(-1, keepdim=True))


def _count_ratio(counts: Tensor, exp_elog_theta: Tensor, exp_elog_beta: Tensor) -> Tensor:
    """n_dw / Z_dw with Z_dw = sum_k exp(E log theta_dk + E log beta_kw), Z floored at the
    smallest normal number: a word no topic gives any mass to (Z underflows to 0) and that the
    document does not contain contributes 0, not 0/0 (the role of the 1e-100 Hoffman et al. add in float64)."""
    return counts / (exp_elog_theta @ exp_elog_beta).clamp_min(torch.finfo(counts.dtype).tiny)


class LocalFit(NamedTuple):
    """The local coordinate ascent's result for a batch of B documents: q(theta_d) = Dir(gamma_d)
    (B, K); the expected topic-word counts sum_d n_dw phi_dwk (K, V), with phi optimal given the
    final gamma; and the number of sweeps the slowest document took."""

    gamma: Tensor
    sstats: Tensor
    iterations: int


def _log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """log(exp(a) @ exp(b)) for a (B, K), b (K, V): (B, V), in a's dtype. Shifted by row and
    column maxima (an infinite maximum, a word no topic uses, shifts by 0) and summed in
    float64, where the products of the two shifted exponentials cannot underflow unless they
    are below 1e-308 (in float32, e^-100 * e^-100 would be 0)."""
    a_max = a.amax(-1, keepdim=True)
    b_max = b.amax(0, keepdim=True)
    a_max = torch.where(torch.isfinite(a_max), a_max, 0.0)
    b_max = torch.where(torch.isfinite(b_max), b_max, 0.0)
    product = (a - a_max).double().exp() @ (b - b_max).double().exp()
    return (product.log() + a_max + b_max).to(a.dtype)


@dataclass(frozen=True)
class LDA:
    """LDA's hyperparameters: K topics, V words, symmetric Dirichlet concentrations alpha (on
    theta_d) and eta (on beta_k); see the module docstring for the model and the bound."""

    num_topics: int
    vocab_size: int
    alpha: float = 0.1
    eta: float = 0.01

    def __post_init__(self) -> None:
        if self.num_topics < 1 or self.vocab_size < 1:
            raise ConfigError(
                f"LDA needs at least one topic and one word, got K={self.num_topics}, V={self.vocab_size}"
            )
        _check_concentration("alpha", self.alpha)
        _check_concentration("eta", self.eta)

    def check_counts(self, counts: Tensor, name: str = "counts") -> None:
        check_counts(counts, self.vocab_size, name)

    @torch.no_grad()
    def local_step(
        self, counts: Tensor, elog_beta: Tensor, *, max_iterations: int = 200, tol: float = 1e-3
    ) -> LocalFit:
        """Coordinate ascent on q(theta_d), q(z_d) of each document in ``counts`` (B, V) with
        E[log beta] = ``elog_beta`` (K, V) fixed (Blei et al. 2003; Hoffman et al. 2013, Alg. 2).

        Every gamma_d starts at alpha + N_d / K and alternates phi_dwk ∝ exp(E[log theta_dk] +
        E[log beta_kw]) and gamma_d = alpha + sum_w n_dw phi_dw until its mean absolute change is
        below ``tol`` (0.001 by default, as Hoffman et al. 2013) or after ``max_iterations``
        sweeps. Each document stops on its own change, so its gamma does not depend on which
        other documents share the batch. phi is never stored:
        sum_w n_dw phi_dwk = exp(E log theta_dk) sum_w exp(E log beta_kw) n_dw / Z_dw with
        Z_dw = sum_k exp(E log theta_dk + E log beta_kw) (Hoffman, Blei and Bach 2010).
        """
        if max_iterations < 1:
            raise ConfigError(f"max_iterations must be a positive integer, got {max_iterations}")
        exp_elog_beta = elog_beta.exp()
        gamma = self.alpha + counts.sum(-1, keepdim=True).expand(-1, self.num_topics) / self.num_topics
        active = torch.ones(counts.shape[0], dtype=torch.bool, device=counts.device)
        iterations = 0
        while iterations < max_iterations and active.any():
            exp_elog_theta = expected_log_dirichlet(gamma).exp()
            ratio = _count_ratio(counts, exp_elog_theta, exp_elog_beta)
            new = self.alpha + exp_elog_theta * (ratio @ exp_elog_beta.T)
            converged = (new - gamma).abs().mean(-1) < tol
            gamma = torch.where(active[:, None], new, gamma)
            active &= ~converged
            iterations += 1
        exp_elog_theta = expected_log_dirichlet(gamma).exp()
        ratio = _count_ratio(counts, exp_elog_theta, exp_elog_beta)
        sstats = exp_elog_beta * (exp_elog_theta.T @ ratio)
        return LocalFit(gamma, sstats, iterations)

    def document_elbo(self, counts: Tensor, gamma: Tensor, elog_beta: Tensor) -> Tensor:
        """Each document's part of the bound, phi at its optimum given gamma: (B,)

        sum_w n_dw log sum_k exp(E[log theta_dk] + E[log beta_kw]) - KL(Dir(gamma_d) || Dir(alpha)).

        With ``elog_beta`` = log beta of fixed topics it is a lower bound on log p(w_d | beta).
        """
        log_word = _log_matmul(expected_log_dirichlet(gamma), elog_beta)
        log_lik = torch.where(counts > 0, counts * log_word, 0.0).sum(-1)  # absent words: 0, even at log 0
        prior = Dirichlet(torch.full_like(gamma, self.alpha), validate_args=False)
        return log_lik - kl_divergence(Dirichlet(gamma, validate_args=False), prior)

    def global_kl(self, lam: Tensor) -> Tensor:
        """sum_k KL(Dir(lambda_k) || Dir(eta)) for lambda (K, V): a scalar."""
        prior = Dirichlet(torch.full_like(lam, self.eta), validate_args=False)
        return kl_divergence(Dirichlet(lam, validate_args=False), prior).sum()

    @torch.no_grad()
    def elbo(self, counts: Tensor, lam: Tensor, *, max_iterations: int = 200, tol: float = 1e-3) -> Tensor:
        """The full-data ELBO L(lambda, gamma*(lambda)) of the module docstring, each gamma_d
        from :meth:`local_step` given q(beta) = Dir(lambda): a scalar."""
        self.check_counts(counts)
        elog_beta = expected_log_dirichlet(lam)
        local = self.local_step(counts, elog_beta, max_iterations=max_iterations, tol=tol)
        return self.document_elbo(counts, local.gamma, elog_beta).sum() - self.global_kl(lam)


def laplace_dirichlet_prior(alpha: Tensor) -> tuple[Tensor, Tensor]:
    """The Laplace approximation of Dir(alpha) in the softmax basis, theta = softmax(z),
    z ~ N(mu, diag(sigma^2)) (MacKay 1998; Srivastava and Sutton 2017, eq. 3):
    mu_k = log alpha_k - mean_i log alpha_i,
    sigma_k^2 = (1 - 2/K) / alpha_k + sum_i (1 / alpha_i) / K^2. Returns (mu, sigma), each (K,)."""
    k = alpha.shape[-1]
    loc = alpha.log() - alpha.log().mean(-1, keepdim=True)
    var = (1 - 2 / k) / alpha + (1 / alpha).sum(-1, keepdim=True) / k**2
    return loc, var.sqrt()


DECODERS = ("product", "mixture")


class AVITM(LatentVariableModel):
    """The generative side of autoencoding variational inference for topic models (Srivastava
    and Sutton 2017): z ~ N(mu, diag(sigma^2)), the Laplace approximation of Dir(alpha 1_K)
    (:func:`laplace_dirichlet_prior`), theta = softmax(z), and the counts
    n ~ Multinomial(N_d, p(w | theta)) with topic parameters beta (K, V):

    - ``decoder="product"`` (ProdLDA): p(w | theta) = softmax(theta^T beta), a product of
      experts with unnormalised topics: a document's word distribution is a weighted geometric
      mean of the topics softmax(beta_k) rather than their mixture.
    - ``decoder="mixture"`` (NVLDA): p(w | theta) = theta^T softmax(beta), LDA's own likelihood
      with each z_dn summed out, so the topics softmax(beta_k) are LDA's beta_k.

    ``likelihood(z)`` is a torch ``Multinomial`` built without argument validation: its
    ``log_prob`` takes N_d from each count vector, so it scores documents of any length
    (including the multinomial coefficient log N_d! - sum_w log n_dw!). :meth:`topics` gives
    softmax(beta_k), the word distribution of a document entirely in topic k.
    """

    prior_loc: Tensor
    prior_scale: Tensor

    def __init__(self, vocab_size: int, num_topics: int, alpha: float = 1.0, decoder: str = "product") -> None:
        super().__init__()
        if num_topics < 2 or vocab_size < 1:
            raise ConfigError(f"AVITM needs at least two topics and one word, got K={num_topics}, V={vocab_size}")
        if decoder not in DECODERS:
            raise ConfigError(f"unknown topic-model decoder {decoder!r}; choose from {list(DECODERS)}")
        _check_concentration("alpha", alpha)
        self.data_dim, self.latent_dim, self.decoder = vocab_size, num_topics, decoder
        loc, scale = laplace_dirichlet_prior(torch.full((num_topics,), float(alpha)))
        self.register_buffer("prior_loc", loc)
        self.register_buffer("prior_scale", scale)
        self.beta = nn.Parameter(torch.randn(num_topics, vocab_size) / math.sqrt(num_topics))

    def prior(self) -> Distribution:
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1, validate_args=False)

    def likelihood(self, z: Tensor) -> Distribution:
        theta = torch.softmax(z, -1)
        if self.decoder == "product":
            return Multinomial(logits=theta @ self.beta, validate_args=False)
        return Multinomial(probs=theta @ torch.softmax(self.beta, -1), validate_args=False)

    def topics(self) -> Tensor:
        """softmax(beta_k) for every topic: (K, V), rows summing to one."""
        return torch.softmax(self.beta.detach(), -1)

    def check_data(self, x: Tensor, name: str = "data") -> None:
        check_counts(x, self.data_dim, name)
