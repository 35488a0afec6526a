"""Stochastic variational inference (Hoffman, Blei, Wang and Paisley 2013) for models with global
and local latent variables, on latent Dirichlet allocation (:class:`avi.models.lda.LDA`).

The full-data ELBO is L(lambda) = sum_{d=1}^N ell_d(lambda) - KL(q(beta; lambda) || p(beta)),
where ell_d is document d's part with its local variational parameters at their optimum given
lambda. For a minibatch B drawn uniformly without replacement, each document is in B with
probability |B| / N, so

    L_B(lambda) = (N / |B|) sum_{d in B} ell_d(lambda) - KL(q(beta) || p(beta))

has E_B[L_B] = L: the minibatch ELBO is unbiased for the full-data ELBO (:func:`minibatch_elbo`).

For a conjugate exponential-family model the natural gradient of L_B with respect to the
global natural parameters lambda is lambda_hat - lambda, where lambda_hat is the coordinate
optimum of lambda had the minibatch been replicated N / |B| times; for LDA
lambda_hat_kw = eta + (N / |B|) sum_{d in B} n_dw phi_dwk. A step of size rho_t is therefore

    lambda <- (1 - rho_t) lambda + rho_t lambda_hat,   rho_t = (tau + t)^(-kappa),

t = 1, 2, ... counting updates; kappa in (0.5, 1] and tau >= 0 satisfy the Robbins-Monro
conditions sum rho_t = inf, sum rho_t^2 < inf. With rho = 1 and B the whole corpus a step is one
iteration of batch coordinate-ascent VI (:func:`coordinate_ascent_step`).

The algorithms follow the ``init`` / ``step(state, batch, ...) -> (state, info)`` shape with
named-tuple states; :func:`fit_svi` and :func:`fit_batch_vi` are the loops. Everything runs
under ``torch.no_grad``: the updates are closed-form, not autograd steps.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from avi.data.dataset import shard_batches
from avi.errors import ConfigError
from avi.models.lda import LDA, LocalFit, expected_log_dirichlet

__all__ = [
    "SVIInfo",
    "SVIState",
    "check_schedule",
    "coordinate_ascent_step",
    "fit_batch_vi",
    "fit_svi",
    "init",
    "init_from_counts",
    "minibatch_elbo",
    "step",
    "step_size",
]


INIT_SHAPE = 100.0  # of :func:`init`'s Gamma(shape, rate = shape) draws


class SVIState(NamedTuple):
    """q(beta_k) = Dir(lambda_k): ``lam`` (K, V); ``t`` the number of global updates so far."""

    lam: Tensor
    t: int


class SVIInfo(NamedTuple):
    """One update: its step size rho_t, the minibatch ELBO L_B at the lambda before the update
    (an unbiased estimate of the full-data ELBO there), and the local sweeps of the slowest
    document."""

    rho: float
    elbo: float
    local_iterations: int


def check_schedule(tau: float, kappa: float) -> None:
    """Raise :class:`ConfigError` unless rho_t = (tau + t)^-kappa meets Robbins-Monro."""
    if not 0.5 < kappa <= 1:
        raise ConfigError(f"the step-size exponent kappa must be in (0.5, 1] for SVI to converge, got {kappa}")
    if not tau >= 0:
        raise ConfigError(f"the step-size delay tau must be non-negative, got {tau}")


def step_size(t: int, *, tau: float, kappa: float) -> float:
    """rho_t = (tau + t)^(-kappa) for update t >= 1."""
    check_schedule(tau, kappa)
    return (tau + t) ** -kappa


def init(model: LDA, counts: Tensor, *, generator: torch.Generator) -> SVIState:
    """lambda_kw ~ Gamma(100, rate 100), independently (mean 1, sd 0.1): nearly uniform topics
    carrying V words each, so the first natural-gradient steps, weighted N / |B| times the
    minibatch's counts, are the data's (Hoffman, Blei and Bach 2010; scikit-learn's online LDA).
    Drawn by numpy from a seed that ``generator`` draws; in the dtype and on the device of
    ``counts`` (N, V).

    Single runs that recovered the topics (every true topic within total variation 0.25 of its
    Hungarian match) in 8 seeds of corpus and start, on 10-topic corpora (V = 200, 2,000
    documents; 15 epochs, minibatches of 100; benchmarks/lda.py), with avi's step sizes
    rho_t = (1 + t)^-0.7: 6 from this start, 3 from :func:`init_from_counts` (the start it
    replaced), 5 for scikit-learn's online LDA; with scikit-learn's, (10 + t)^-0.7: 4, 2 and 4.
    """
    seed = int(torch.randint(2**62, (), generator=generator))
    draws = np.random.default_rng(seed).gamma(INIT_SHAPE, 1 / INIT_SHAPE, size=(model.num_topics, model.vocab_size))
    return SVIState(torch.as_tensor(draws, dtype=counts.dtype, device=counts.device), 0)


def init_from_counts(model: LDA, counts: Tensor, *, generator: torch.Generator) -> SVIState:
    """lambda_kw = eta + e_kw, e_kw ~ Exponential with mean W / (K V), W the number of words in
    the corpus ``counts`` (N, V): random topics carrying the corpus's word counts between them,
    as the first full update would; in the dtype and on the device of ``counts``. The start of
    :func:`fit_batch_vi`: from the nearly uniform topics of :func:`init`, whose symmetry only the
    noise of the start breaks when every update uses the whole corpus, batch VI ended in
    merged-and-split topics (a true topic more than 0.25 from its match) in 2 of 8 seeds on
    10-topic corpora (30 iterations), from this start in 1 of 8.
    """
    lam = torch.empty(model.num_topics, model.vocab_size, dtype=counts.dtype).exponential_(generator=generator)
    num_words = float(counts.sum())
    return SVIState(model.eta + lam.to(counts.device) * (num_words / (model.num_topics * model.vocab_size)), 0)


def _check_batch(model: LDA, counts: Tensor, num_docs: int) -> None:
    model.check_counts(counts)
    if not counts.shape[0] <= num_docs:
        raise ConfigError(f"a minibatch of {counts.shape[0]} documents cannot come from a corpus of {num_docs}")


def _local_fit(
    model: LDA, lam: Tensor, counts: Tensor, scale: float, max_iterations: int, tol: float
) -> tuple[LocalFit, Tensor]:
    """The documents' local coordinate ascent given q(beta) = Dir(lambda), and
    scale * sum_d ell_d(lambda) - sum_k KL(Dir(lambda_k) || Dir(eta))."""
    elog_beta = expected_log_dirichlet(lam)
    local = model.local_step(counts, elog_beta, max_iterations=max_iterations, tol=tol)
    return local, scale * model.document_elbo(counts, local.gamma, elog_beta).sum() - model.global_kl(lam)


@torch.no_grad()
def minibatch_elbo(
    model: LDA, lam: Tensor, counts: Tensor, *, num_docs: int, max_local_iterations: int = 200, local_tol: float = 1e-3
) -> Tensor:
    """L_B(lambda) = (N / |B|) sum_{d in B} ell_d(lambda) - sum_k KL(Dir(lambda_k) || Dir(eta)),
    for the minibatch ``counts`` (|B|, V) of a corpus of N = ``num_docs`` documents: unbiased
    for :meth:`LDA.elbo` over the corpus when B is a uniform random subset (module docstring)."""
    _check_batch(model, counts, num_docs)
    return _local_fit(model, lam, counts, num_docs / counts.shape[0], max_local_iterations, local_tol)[1]


@torch.no_grad()
def step(
    state: SVIState,
    counts: Tensor,
    *,
    model: LDA,
    num_docs: int,
    tau: float = 1.0,
    kappa: float = 0.7,
    max_local_iterations: int = 200,
    local_tol: float = 1e-3,
) -> tuple[SVIState, SVIInfo]:
    """One SVI update from the minibatch ``counts`` (|B|, V) of a corpus of N = ``num_docs``:
    local coordinate ascent for each document of B given q(beta) (:meth:`LDA.local_step`), then
    the natural-gradient step lambda <- (1 - rho_t) lambda + rho_t (eta + (N/|B|) sstats)
    (Hoffman et al. 2013, Algorithm 1 and Figure 6)."""
    _check_batch(model, counts, num_docs)
    rho = step_size(state.t + 1, tau=tau, kappa=kappa)
    scale = num_docs / counts.shape[0]
    local, elbo = _local_fit(model, state.lam, counts, scale, max_local_iterations, local_tol)
    lam_hat = model.eta + scale * local.sstats
    lam = (1 - rho) * state.lam + rho * lam_hat
    return SVIState(lam, state.t + 1), SVIInfo(rho, float(elbo), local.iterations)


@torch.no_grad()
def coordinate_ascent_step(
    state: SVIState, counts: Tensor, *, model: LDA, max_local_iterations: int = 200, local_tol: float = 1e-3
) -> tuple[SVIState, SVIInfo]:
    """One iteration of batch mean-field VI (Blei et al. 2003) on the whole corpus ``counts``
    (N, V): local coordinate ascent for every document, then lambda = eta + sum_d n_dw phi_dwk.
    The info's ELBO is the full-data ELBO at the lambda before the update."""
    model.check_counts(counts)
    local, elbo = _local_fit(model, state.lam, counts, 1.0, max_local_iterations, local_tol)
    return SVIState(model.eta + local.sstats, state.t + 1), SVIInfo(1.0, float(elbo), local.iterations)


def fit_svi(
    model: LDA,
    counts: Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    tau: float = 1.0,
    kappa: float = 0.7,
    state: SVIState | None = None,
    max_local_iterations: int = 200,
    local_tol: float = 1e-3,
) -> tuple[SVIState, list[SVIInfo]]:
    """``epochs`` passes of :func:`step` over ``counts`` (N, V) in random minibatches of
    ``batch_size`` (a fresh permutation per epoch from ``generator``), from ``state`` or
    :func:`init`. Returns the final state and every update's info."""
    model.check_counts(counts)
    check_schedule(tau, kappa)
    if epochs < 0:
        raise ConfigError(f"epochs must be non-negative, got {epochs}")
    if state is None:
        state = init(model, counts, generator=generator)
    infos: list[SVIInfo] = []
    for _ in range(epochs):
        for index in shard_batches(counts.shape[0], batch_size, generator):
            state, info = step(
                state, counts[index], model=model, num_docs=counts.shape[0], tau=tau, kappa=kappa,
                max_local_iterations=max_local_iterations, local_tol=local_tol,
            )  # fmt: skip
            infos.append(info)
    return state, infos


def fit_batch_vi(
    model: LDA,
    counts: Tensor,
    *,
    iterations: int,
    generator: torch.Generator,
    state: SVIState | None = None,
    max_local_iterations: int = 200,
    local_tol: float = 1e-3,
) -> tuple[SVIState, list[SVIInfo]]:
    """``iterations`` of :func:`coordinate_ascent_step` on the whole corpus, from ``state`` or
    :func:`init_from_counts`."""
    if iterations < 0:
        raise ConfigError(f"iterations must be non-negative, got {iterations}")
    if state is None:
        state = init_from_counts(model, counts, generator=generator)
    infos: list[SVIInfo] = []
    for _ in range(iterations):
        state, info = coordinate_ascent_step(
            state, counts, model=model, max_local_iterations=max_local_iterations, local_tol=local_tol
        )
        infos.append(info)
    return state, infos
