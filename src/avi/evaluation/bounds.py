"""Bounds on log p(x) over a whole data set, computed in chunks, without gradients."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from avi.data.dataset import Dataset
from avi.errors import ConfigError
from avi.evaluation.importance import PRECISIONS, NoiseStream, chunk_log_weights, row_bytes
from avi.models.base import LatentVariableModel
from avi.nn import eval_mode
from avi.objectives.bounds import elbo_terms
from avi.objectives.cubo import check_order

__all__ = ["TARGET_ROWS", "LogLikelihood", "chunk_sizes", "cubo_per_point", "elbo_per_point", "log_likelihood", "mean_elbo"]

#: rows (samples x points) per chunk when the budget allows: the logits stay near the cache
TARGET_ROWS = 2048


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
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    seed: int | None = None,
    points: range | None = None,
    precision: str = "fp32",
    on_batch: Callable[[int], None] | None = None,
) -> LogLikelihood:
    """Importance-sampled log p(x): the IWAE bound log (1/k) sum_i w_i, w_i = p(x, z_i) / q(z_i|x).

    Samples are drawn ``chunk_size`` at a time for ``batch_size`` points and the running
    log-sum-exp is accumulated, so the working memory is bounded by chunk_size x batch_size rows
    whatever k; without explicit sizes they follow from ``memory_budget`` (MiB, see
    :func:`chunk_sizes`). The noise of point i is its own stream seeded by (``seed``, i) (a
    seed is drawn from the global generator when None), so for Gaussian posteriors the estimate
    does not depend on the sizes, and ``points`` (a range of indices into the data: one
    process's shard) gives the same per-point values as the whole data set does. The standard
    error is the delta-method one, sqrt(Var(w) / (k E[w]^2)), from the same weights.
    ``precision="bf16"`` runs a Bernoulli MLP decoder under bfloat16 autocast (see
    :mod:`avi.evaluation.importance`); the log weights and their sums stay in float32.
    """
    return _log_power_mean(
        model, posterior, data, 1.0, k=k, batch_size=batch_size, chunk_size=chunk_size, memory_budget=memory_budget,
        seed=seed, points=points, precision=precision, on_batch=on_batch,
    )  # fmt: skip


@torch.no_grad()
def cubo_per_point(
    model: LatentVariableModel,
    posterior: nn.Module,
    data: Dataset | Tensor,
    *,
    n: float = 2.0,
    k: int = 5000,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    seed: int | None = None,
    points: range | None = None,
    precision: str = "fp32",
    on_batch: Callable[[int], None] | None = None,
) -> LogLikelihood:
    """The chi upper bound CUBO_n = (1/n) log (1/k) sum_i w_i^n per point (Dieng et al. 2017),
    chunked and seeded as :func:`log_likelihood` is; with the ELBO it sandwiches log p(x).

    The k-sample estimate is biased low (it converges to CUBO_n from below as k grows) and the
    weights' n-th powers are heavy-tailed, so where q is much narrower than p(z|x) it can fall
    below log p(x). The delta-method standard error is sqrt(Var(w^n) / (k E[w^n]^2)) / n.
    """
    check_order(n)
    return _log_power_mean(
        model, posterior, data, n, k=k, batch_size=batch_size, chunk_size=chunk_size, memory_budget=memory_budget,
        seed=seed, points=points, precision=precision, on_batch=on_batch,
    )  # fmt: skip


def chunk_sizes(
    model: LatentVariableModel,
    k: int,
    dtype: torch.dtype = torch.float32,
    *,
    memory_budget: float | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
) -> tuple[int, int]:
    """(points per batch, samples per chunk) of an importance-sampling pass with k samples.

    A chunk holds batch x chunk rows of :func:`~avi.evaluation.importance.row_bytes` each; at
    most ``memory_budget`` MiB of them (the budget covers this working memory, not the model
    and data), and at most :data:`TARGET_ROWS` (larger chunks are slower: the logits fall out of
    the cache). Samples are chunked first (up to k), then points batched to fill the rows.
    Explicit sizes are used as given and must fit the budget.
    """
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    if memory_budget is not None and not memory_budget > 0:
        raise ConfigError(f"the memory budget must be a positive number of MiB, got {memory_budget}")
    row = row_bytes(model, dtype)
    rows = TARGET_ROWS
    if memory_budget is not None:
        rows = int(memory_budget * 2**20) // row
        if rows < 1:
            raise ConfigError(
                f"a memory budget of {memory_budget:g} MiB is below one sample's working memory ({row / 2**20:.3f} MiB)"
            )
        rows = min(rows, TARGET_ROWS)
    chunk = chunk_size or min(k, rows)
    batch = batch_size or max(1, rows // chunk)
    if memory_budget is not None and batch * min(chunk, k) * row > memory_budget * 2**20:
        raise ConfigError(
            f"batch_size {batch} x chunk_size {chunk} needs {batch * min(chunk, k) * row / 2**20:.1f} MiB, "
            f"over the memory budget of {memory_budget:g} MiB"
        )
    return batch, chunk


def _log_power_mean(
    model: LatentVariableModel,
    posterior: nn.Module,
    data: Dataset | Tensor,
    order: float,
    *,
    k: int,
    batch_size: int | None,
    chunk_size: int | None,
    memory_budget: float | None,
    seed: int | None,
    points: range | None,
    precision: str,
    on_batch: Callable[[int], None] | None,
) -> LogLikelihood:
    """(1/r) log (1/k) sum_i w_i^r per point for r = ``order`` > 0, and its delta-method
    standard error sqrt(Var(w^r) / (k E[w^r]^2)) / r, from running log-sum-exps of r log w and
    2 r log w over chunks of samples."""
    if k < 1:
        raise ConfigError(f"k must be a positive integer, got {k}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    x = _points(data)
    batch_size, chunk_size = chunk_sizes(
        model, k, x.dtype, memory_budget=memory_budget, batch_size=batch_size, chunk_size=chunk_size
    )
    points = range(x.shape[0]) if points is None else points
    if points.step != 1 or points.start < 0 or points.stop > x.shape[0]:
        raise ConfigError(f"points must be a contiguous range within the {x.shape[0]} data points, got {points}")
    if seed is None:
        seed = int(torch.randint(2**31, ()).item())
    values, stderrs = [], []
    for start in range(points.start, points.stop, batch_size):
        index = torch.arange(start, min(start + batch_size, points.stop), device=x.device)
        xb = x[index]
        with eval_mode(posterior):
            q = posterior(xb, index)
        noise = NoiseStream(seed, index, model.latent_dim, x.dtype, x.device)
        lse = torch.full((index.numel(),), -math.inf, device=x.device, dtype=x.dtype)
        lse2 = lse.clone()
        for done in range(0, k, chunk_size):
            lw = order * chunk_log_weights(model, q, xb, min(chunk_size, k - done), noise, precision=precision)
            lse = torch.logaddexp(lse, torch.logsumexp(lw, 1))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * lw, 1))
        values.append((lse - math.log(k)) / order)
        relative_var = (k * torch.exp(lse2 - 2 * lse) - 1).clamp_min(0)
        stderrs.append((relative_var / k).sqrt() / order)
        if on_batch is not None:
            on_batch(index.numel())
    empty = x.new_zeros(0)
    return LogLikelihood(torch.cat(values) if values else empty, torch.cat(stderrs) if stderrs else empty, k)
