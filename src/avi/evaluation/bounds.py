"""Bounds on log p(x) over a whole data set, computed in chunks, without gradients, with
jackknife standard errors and the importance weights' diagnostics (Pareto k-hat, effective
sample size) per point."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.data.dataset import Dataset
from avi.errors import ConfigError
from avi.evaluation.importance import (
    PRECISIONS,
    FastDecoder,
    NoiseStream,
    chunk_log_weights,
    compiled_decoder,
    decoder_copy_bytes,
    fast_decoder,
    fast_path,
    row_bytes,
)
from avi.evaluation.jackknife import jackknife_log_mean
from avi.evaluation.psis import effective_sample_size, pareto_k
from avi.models.base import LatentVariableModel
from avi.nn import eval_mode
from avi.objectives.cubo import check_order
from avi.objectives.scoring import elbo_per_point, fixed_points, mean_elbo

__all__ = [
    "MAX_BUDGET_MIB",
    "RESERVE_MIB",
    "TARGET_ROWS",
    "MIN_POINTS",
    "COMPILED_ROWS",
    "LogLikelihood",
    "chunk_sizes",
    "cubo_per_point",
    "elbo_per_point",
    "log_likelihood",
    "mean_elbo",
]

#: rows (samples x points) per chunk when the budget allows: k = 5000 in fp32 on an AMX host, 2
#: threads, took 15.1-16.0 ms a point in chunks of 4 points x 1,000 samples against 17.4-18.9 in
#: chunks of 1 x 1,000 (which keep the logits nearer the cache) and 21-22 in chunks of 1 x 500
TARGET_ROWS = 4000

#: the same for a compiled decoder (``compile=True``), whose fused kernel reads the logits once,
#: so that the per-chunk costs weigh more than the cache: k = 5000 in bf16 on an AMX host, 2
#: threads, took 4.8-5.0 ms a point in chunks of 1 point x 2,500 samples, 4.1-4.6 in chunks of
#: 4 x 1,250 and 4.6-5.3 in chunks of 10,000 rows
COMPILED_ROWS = 5000

#: points that a chunk holds at least without a memory budget, where the rows allow: the
#: per-batch costs (the encoder, the noise streams, the Python between the kernels, which two
#: worker threads take turns at) are shared by the batch's points
MIN_POINTS = 4

#: MiB of a memory budget kept per worker thread for what is not a row: the point batch's
#: encoder output and noise block, BLAS/oneDNN scratch, the allocator's slack
RESERVE_MIB = 2.0

#: the largest memory budget, in MiB (2^40 MiB = 1 EiB): larger "budgets" are typos
MAX_BUDGET_MIB = 2.0**40

#: per-point estimates of :class:`LogLikelihood`: value, stderr, debiased, debiased_stderr, pareto_k, ess
ESTIMATES = 6

#: log weights (points x k) per call of the estimates, in whole batches: at k = 5000, 6 points a
#: call, 1.2 ms per point on one loaded core where one point a call took 3.8 (0.9% of the time of
#: sampling the 784-400-20 MNIST VAE); the temporaries (about 40 bytes per log weight, 1.3 MiB
#: here) come out of the :data:`RESERVE_MIB`
ESTIMATE_SAMPLES = 2**15


class LogLikelihood(NamedTuple):
    """Per-point estimates (N,) from k importance weights w = p(x, z) / q(z|x) of log p(x) by
    IWAE (or CUBO_n, from w^n, each value divided by n), their jackknife standard errors and the
    weights' diagnostics (:mod:`avi.evaluation.jackknife`, :mod:`avi.evaluation.psis`). NaN where
    undefined: standard errors for k < 2 (the debiased one for k < 3), k-hat for k < 21. An
    estimator that gives only a value and its standard error (AIS) leaves the rest None."""

    #: the k-sample bound log (1/k) sum_i w_i
    value: Tensor
    #: its standard error
    stderr: Tensor
    k: int
    #: the jackknife-debiased estimate (bias O(1/k^2) where Var(w) is finite), and its standard error
    debiased: Tensor | None = None
    debiased_stderr: Tensor | None = None
    #: the Pareto k-hat of the weights (over 0.7: the estimate is unreliable)
    pareto_k: Tensor | None = None
    #: Kish's effective sample size of the weights, (sum w)^2 / sum w^2, in [1, k]
    ess: Tensor | None = None


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
    threads: int | None = None,
    compile: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> LogLikelihood:
    """Importance-sampled log p(x): the IWAE bound log (1/k) sum_i w_i, w_i = p(x, z_i) / q(z_i|x).

    Samples are drawn ``chunk_size`` at a time for ``batch_size`` points and the running
    log-sum-exp is accumulated, so the working memory is bounded by chunk_size x batch_size rows
    whatever k; without explicit sizes they follow from ``memory_budget`` (MiB, see
    :func:`chunk_sizes`). The noise of point i is its own stream seeded by (``seed``, i) (a
    seed is drawn from the global generator when None), so for Gaussian posteriors the estimate
    does not depend on the sizes, and ``points`` (a range of indices into the data: one
    process's shard) gives the same per-point values as the whole data set does. From the same
    weights come the delete-1 jackknife standard error, which holds for heavy-tailed weights
    where the delta method's sqrt(Var(w) / (k E[w]^2)) can fall to half the real spread; the
    jackknife-debiased estimate of log p(x) and its standard error, for the interval J ± 1.96 se;
    the Pareto k-hat and the effective sample size of the weights (:class:`LogLikelihood`).
    ``precision="bf16"`` runs a Bernoulli MLP decoder in bfloat16 (see
    :mod:`avi.evaluation.importance`); the log weights and their sums stay in float32. On CPU
    the points are shared among ``threads`` worker threads (default ``torch.get_num_threads()``)
    of one intra-op thread each. ``compile=True`` runs such a decoder's log-density through
    ``torch.compile`` (:func:`~avi.evaluation.importance.compiled_decoder`), in larger chunks
    that split k equally (:func:`chunk_sizes`), so that every chunk but a last partial batch's
    has the compiled shape.
    """
    return _log_power_mean(
        model, posterior, data, 1.0, k=k, batch_size=batch_size, chunk_size=chunk_size, memory_budget=memory_budget,
        seed=seed, points=points, precision=precision, threads=threads, compile=compile, on_batch=on_batch,
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
    threads: int | None = None,
    compile: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> LogLikelihood:
    """The chi upper bound CUBO_n = (1/n) log (1/k) sum_i w_i^n per point (Dieng et al. 2017),
    chunked and seeded as :func:`log_likelihood` is; with the ELBO it sandwiches log p(x).

    The k-sample estimate is biased low (it converges to CUBO_n from below as k grows) and the
    weights' n-th powers are heavy-tailed, so where q is much narrower than p(z|x) it can fall
    below log p(x). The standard errors are the jackknife's, and k-hat and the effective sample
    size are those of w^n (whose tail index is n times that of w).
    """
    check_order(n)
    return _log_power_mean(
        model, posterior, data, n, k=k, batch_size=batch_size, chunk_size=chunk_size, memory_budget=memory_budget,
        seed=seed, points=points, precision=precision, threads=threads, compile=compile, on_batch=on_batch,
    )  # fmt: skip


def chunk_sizes(
    model: LatentVariableModel,
    k: int,
    dtype: torch.dtype = torch.float32,
    *,
    memory_budget: float | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    workers: int = 1,
    precision: str = "fp32",
    compile: bool = False,
) -> tuple[int, int]:
    """(points per batch, samples per chunk) of an importance-sampling pass with k samples.

    A chunk holds batch x chunk rows of :func:`~avi.evaluation.importance.row_bytes` each; at
    most ``memory_budget`` MiB of them less :data:`RESERVE_MIB` per worker and, in bfloat16, the
    decoder's weights cast once (:func:`~avi.evaluation.importance.decoder_copy_bytes`; the
    budget covers this working memory, not the model and data), and at most :data:`TARGET_ROWS`.
    Samples are chunked first, up to k (and, without a budget, to a :data:`MIN_POINTS`-th of the
    rows), then points batched to fill the rows. The k log weights each point holds until its estimates
    are made (with the jackknife's float64 temporaries about 64 bytes per sample: 0.3 MiB at k =
    5000) come out of the reserve.
    Explicit sizes are used as given and must fit the budget. With ``compile`` the cap is
    :data:`COMPILED_ROWS` and k is split into equal chunks (5000 = 4 x 1250), so that one
    compiled shape serves every chunk.
    """
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    if memory_budget is not None and not 0 < memory_budget <= MAX_BUDGET_MIB:
        raise ConfigError(f"the memory budget must be a positive number of MiB up to 2^40, got {memory_budget}")
    row, copies = row_bytes(model, dtype, precision), decoder_copy_bytes(model, precision)
    cap = COMPILED_ROWS if compile else TARGET_ROWS
    rows = cap
    if memory_budget is not None:
        rows = (int((memory_budget - workers * RESERVE_MIB) * 2**20) - copies) // (row * workers)
        if rows < 1:
            raise ConfigError(
                f"a memory budget of {memory_budget:g} MiB is below one sample's working memory "
                f"({row / 2**20:.3f} MiB) and {RESERVE_MIB:g} MiB of scratch per thread ({workers})"
                + (f" and {copies / 2**20:.2f} MiB of bfloat16 weights" if copies else "")
            )
        rows = min(rows, cap)
    points = MIN_POINTS if memory_budget is None else 1  # under a budget: the least memory besides the rows
    chunk = chunk_size or min(k, max(1, rows // points))
    if compile and chunk_size is None:
        chunk = -(-k // -(-k // chunk))  # k in equal chunks (the last one short by less than one per chunk)
    batch = batch_size or max(1, rows // chunk)
    need = workers * (batch * min(chunk, k) * row + RESERVE_MIB * 2**20) + copies
    if memory_budget is not None and need > memory_budget * 2**20:
        raise ConfigError(
            f"batch_size {batch} x chunk_size {chunk}{f' x {workers} threads' if workers > 1 else ''} needs "
            f"{need / 2**20:.1f} MiB, over the memory budget of {memory_budget:g} MiB"
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
    threads: int | None,
    compile: bool,
    on_batch: Callable[[int], None] | None,
) -> LogLikelihood:
    """The :class:`LogLikelihood` of (1/r) log (1/k) sum_i w_i^r per point for r = ``order`` > 0,
    from the points' k log weights (drawn in chunks of samples: :func:`_estimate_part`).

    On CPU the points are split into ``threads`` contiguous parts (default
    ``torch.get_num_threads()``) evaluated by as many Python threads, each running torch on one
    intra-op thread: independent workers never wait for each other, where intra-op parallelism
    synchronises every operation (about 3x slower on a 2-core machine shared with other jobs).
    Each point's noise is its own, so the split changes nothing in the result. An interrupt (or
    a worker's error) stops every worker after its current chunk of samples: see :func:`_in_parallel`."""
    _check_sampling(k, precision, threads)
    x = fixed_points(data)
    points = range(x.shape[0]) if points is None else points
    if points.step != 1 or points.start < 0 or points.stop > x.shape[0]:
        raise ConfigError(f"points must be a contiguous range within the {x.shape[0]} data points, got {points}")
    workers = 1 if x.device.type != "cpu" else threads or torch.get_num_threads()
    workers = max(1, min(workers, len(points)))
    batch_size, chunk_size = chunk_sizes(
        model, k, x.dtype, memory_budget=memory_budget, batch_size=batch_size, chunk_size=chunk_size, workers=workers,
        precision=precision, compile=compile and fast_path(model),
    )  # fmt: skip
    if seed is None:
        seed = int(torch.randint(2**31, ()).item())
    decoder = fast_decoder(model, precision)  # once: in bf16, the weights' copies
    if compile and decoder is not None:
        # the batches of a worker's part: batch_size points, or the whole part where it is smaller
        decoder = _compiled(decoder, x, (min(batch_size, len(points) // workers), chunk_size), workers)
    stop = threading.Event()
    with eval_mode(posterior):
        with torch.no_grad():
            prior = model.prior()  # once: constant over the call (a VampPrior's is an encoder pass)
        sample = partial(_batch_log_weights, model, posterior, x, chunk_size=chunk_size, seed=seed,
                         precision=precision, prior=prior, decoder=decoder, stop=stop)  # fmt: skip
        span = batch_size * max(1, ESTIMATE_SAMPLES // (k * batch_size))
        estimate = partial(_estimate_part, sample, x, order=order, k=k, batch_size=batch_size, span=span,
                           on_batch=_serialised(on_batch))  # fmt: skip
        value, stderr, *rest = torch.cat(_in_parallel(estimate, points, workers, stop)).T
    return LogLikelihood(value, stderr, k, *rest)


def _compiled(decoder: FastDecoder, x: Tensor, shape: tuple[int, int], workers: int) -> FastDecoder:
    """:func:`~avi.evaluation.importance.compiled_decoder` compiled with the intra-op thread
    count that each of ``workers`` runs on (one where there are several)."""
    with _intra_op_threads(1 if workers > 1 else torch.get_num_threads()):
        return compiled_decoder(decoder, x, shape)


@contextmanager
def _intra_op_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` inside, the caller's restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_sampling(k: int, precision: str, threads: int | None) -> None:
    if k < 1:
        raise ConfigError(f"k must be a positive integer, got {k}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be a positive integer, got {threads}")


def _estimate_part(
    sample: Callable[[Tensor, Tensor], None],
    x: Tensor,
    part: range,
    *,
    order: float,
    k: int,
    batch_size: int,
    span: int,
    on_batch: Callable[[int], None],
) -> Tensor:
    """The estimates (len(part), :data:`ESTIMATES`) of the points ``part`` of x: their k log
    weights drawn by ``sample`` ``batch_size`` points at a time (each batch reported to
    ``on_batch``), the estimates made for ``span`` points at a time (:data:`ESTIMATE_SAMPLES`)."""
    rows = [x.new_zeros(0, ESTIMATES)]
    with torch.no_grad():  # grad mode is per thread
        for first in range(part.start, part.stop, span):
            group = torch.arange(first, min(first + span, part.stop), device=x.device)
            log_weights = x.new_empty(group.numel(), k)
            for start in range(0, group.numel(), batch_size):
                index = group[start : start + batch_size]
                sample(index, log_weights[start : start + batch_size])
                on_batch(index.numel())
            rows.append(_estimates(log_weights.mul_(order), order))
    return torch.cat(rows)


def _batch_log_weights(
    model: LatentVariableModel,
    posterior: nn.Module,
    x: Tensor,
    index: Tensor,
    out: Tensor,
    *,
    chunk_size: int,
    seed: int,
    precision: str,
    prior: Distribution,
    decoder: FastDecoder | None,
    stop: threading.Event,
) -> None:
    """The k log weights of the points ``index`` of x into ``out`` (B, k), drawn ``chunk_size``
    samples at a time from each point's noise stream, with ``prior`` the model's p(z) and
    ``decoder`` its fast path's; raises :class:`_Stopped` before a chunk once ``stop`` is set."""
    xb = x[index]
    q = posterior(xb, index)
    noise = NoiseStream(seed, index, model.latent_dim, x.dtype, x.device)
    k = out.shape[1]
    for done in range(0, k, chunk_size):
        if stop.is_set():
            raise _Stopped
        chunk = min(chunk_size, k - done)
        out[:, done : done + chunk] = chunk_log_weights(
            model, q, xb, chunk, noise, precision=precision, prior=prior, decoder=decoder
        )


def _serialised(on_batch: Callable[[int], None] | None) -> Callable[[int], None]:
    """``on_batch`` called by one worker thread at a time; nothing where it is None."""
    lock = threading.Lock()

    def report(count: int) -> None:
        if on_batch is not None:
            with lock:
                on_batch(count)

    return report


def _estimates(log_weights: Tensor, order: float) -> Tensor:
    """(B, :data:`ESTIMATES`) from r log w (B, k), r = ``order``: the IWAE bound, the debiased estimate
    and their jackknife standard errors of log mean w^r, each divided by r (in :class:`LogLikelihood`'s
    order), then the k-hat and the effective sample size of w^r."""
    bound, bound_stderr, debiased, debiased_stderr = (v / order for v in jackknife_log_mean(log_weights))
    khat, ess = pareto_k(log_weights), effective_sample_size(log_weights)
    return torch.stack([bound, bound_stderr, debiased, debiased_stderr, khat, ess], 1)


def _in_parallel(
    estimate: Callable[[range], Tensor], points: range, workers: int, stop: threading.Event
) -> list[Tensor]:
    """``estimate`` of ``workers`` contiguous parts of ``points``, each in a Python thread running
    torch on one intra-op thread (the intra-op thread count restored after), in point order.

    The calling thread waits until every part is done or one fails; whatever ends that wait sets
    ``stop``, which ``estimate`` checks before every chunk of samples, so after Ctrl-C (whose
    KeyboardInterrupt Python raises in the main thread alone) or a worker's error (raised here)
    the other workers end within a chunk instead of running to the end of their parts."""
    if workers == 1:
        return [estimate(points)]
    n = len(points)
    parts = [range(points.start + n * w // workers, points.start + n * (w + 1) // workers) for w in range(workers)]
    with _intra_op_threads(1), ThreadPoolExecutor(workers) as pool:  # its exit joins the workers, stopped or done
        futures = [pool.submit(estimate, part) for part in parts]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            stop.set()  # all done, else an interrupt or an error: the rest stop
        for error in (future.exception() for future in done):
            if error is not None:
                raise error
        return [future.result() for future in futures]


class _Stopped(Exception):
    """Ends a worker of :func:`_in_parallel` whose results are no longer awaited."""
