"""Bounds on log p(x) over a whole data set, computed in chunks, without gradients."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from avi.data.dataset import Dataset
from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.nn import eval_mode
from avi.objectives.bounds import elbo_terms, log_weights
from avi.objectives.cubo import check_order

__all__ = ["LogLikelihood", "cubo_per_point", "elbo_per_point", "log_likelihood", "mean_elbo"]


class LogLikelihood(NamedTuple):
    """Per-point estimates with k samples (of log p(x) by IWAE, or of CUBO_n) and their Monte
    Carlo standard errors, (N,)."""

    value: Tensor
    stderr: Tensor
    k: int


def _points(data: Dataset | Tensor) -> Tensor:
    if isinstance(data, Dataset):
        if data.dynamic:
            raise ConfigError("evaluate on a fixed binarisation: call data.binarized(seed) first")
        return data.x
    return data


@torch.no_grad()
def elbo_per_point(
    model: LatentVariableModel,
    posterior: nn.Module,
    data: Dataset | Tensor,
    *,
    num_samples: int = 1,
    analytic_kl: bool = True,
    batch_size: int = 1000,
) -> tuple[Tensor, Tensor, Tensor]:
    """(ELBO, reconstruction, KL) per point, each (N,); q for point i is ``posterior(x, i)`` in
    evaluation mode (no training-only noise)."""
    x = _points(data)
    out = []
    for start in range(0, x.shape[0], batch_size):
        index = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
        with eval_mode(posterior):
            q = posterior(x[index], index)
        terms = elbo_terms(model, q, x[index], num_samples=num_samples, analytic_kl=analytic_kl)
        out.append(torch.stack([terms.value, terms.reconstruction, terms.kl]))
    value, reconstruction, kl = torch.cat(out, dim=1)
    return value, reconstruction, kl


def mean_elbo(model: LatentVariableModel, posterior: nn.Module, data: Dataset | Tensor) -> float:
    """The mean ELBO per point of a data set."""
    return elbo_per_point(model, posterior, data)[0].mean().item()


@torch.no_grad()
def log_likelihood(
    model: LatentVariableModel,
    posterior: nn.Module,
    data: Dataset | Tensor,
    *,
    k: int = 5000,
    batch_size: int = 100,
    chunk_size: int = 500,
    on_batch: Callable[[int], None] | None = None,
) -> LogLikelihood:
    """Importance-sampled log p(x): the IWAE bound log (1/k) sum_i w_i, w_i = p(x, z_i) / q(z_i|x).

    Samples are drawn ``chunk_size`` at a time for ``batch_size`` points, and the running
    log-sum-exp is accumulated, so memory is bounded by chunk_size x batch_size rows whatever k.
    The standard error is the delta-method one, sqrt(Var(w) / (k E[w]^2)), from the same weights.
    """
    return _log_power_mean(model, posterior, data, 1.0, k=k, batch_size=batch_size, chunk_size=chunk_size, on_batch=on_batch)


@torch.no_grad()
def cubo_per_point(
    model: LatentVariableModel,
    posterior: nn.Module,
    data: Dataset | Tensor,
    *,
    n: float = 2.0,
    k: int = 5000,
    batch_size: int = 100,
    chunk_size: int = 500,
    on_batch: Callable[[int], None] | None = None,
) -> LogLikelihood:
    """The chi upper bound CUBO_n = (1/n) log (1/k) sum_i w_i^n per point (Dieng et al. 2017),
    chunked as :func:`log_likelihood` is; with the ELBO it sandwiches log p(x).

    The k-sample estimate is biased low (it converges to CUBO_n from below as k grows) and the
    weights' n-th powers are heavy-tailed, so where q is much narrower than p(z|x) it can fall
    below log p(x). The delta-method standard error is sqrt(Var(w^n) / (k E[w^n]^2)) / n.
    """
    check_order(n)
    return _log_power_mean(model, posterior, data, n, k=k, batch_size=batch_size, chunk_size=chunk_size, on_batch=on_batch)


def _log_power_mean(
    model: LatentVariableModel,
    posterior: nn.Module,
    data: Dataset | Tensor,
    order: float,
    *,
    k: int,
    batch_size: int,
    chunk_size: int,
    on_batch: Callable[[int], None] | None,
) -> LogLikelihood:
    """(1/r) log (1/k) sum_i w_i^r per point for r = ``order`` > 0, and its delta-method
    standard error sqrt(Var(w^r) / (k E[w^r]^2)) / r, from running log-sum-exps of r log w and
    2 r log w over chunks of samples."""
    if k < 1:
        raise ConfigError(f"k must be a positive integer, got {k}")
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError(f"batch_size and chunk_size must be positive, got {batch_size} and {chunk_size}")
    x = _points(data)
    values, stderrs = [], []
    for start in range(0, x.shape[0], batch_size):
        index = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
        with eval_mode(posterior):
            q = posterior(x[index], index)
        lse = torch.full((index.numel(),), -math.inf, device=x.device, dtype=x.dtype)
        lse2 = lse.clone()
        for done in range(0, k, chunk_size):
            log_lik, log_prior, log_q = log_weights(model, q, x[index], min(chunk_size, k - done))
            lw = order * (log_lik + log_prior - log_q).to(x.dtype)
            lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * lw, 0))
        values.append((lse - math.log(k)) / order)
        relative_var = (k * torch.exp(lse2 - 2 * lse) - 1).clamp_min(0)
        stderrs.append((relative_var / k).sqrt() / order)
        if on_batch is not None:
            on_batch(index.numel())
    return LogLikelihood(torch.cat(values), torch.cat(stderrs), k)
