"""``avi evaluate``: test ELBO and importance-sampled log-likelihood of a trained run.

The importance sampling runs in chunks sized by a memory budget in MiB (default: the config's
``evaluate.memory_budget``, else ``evaluate.batch_size`` x ``evaluate.chunk_size`` or
cache-sized chunks; :func:`~avi.evaluation.bounds.chunk_sizes`), with the noise of test point i
seeded by (``train.seed``, i). ``precision="bf16"`` runs a Bernoulli MLP decoder under bfloat16
autocast; where the device has no native bf16 or the model no fast path it runs in fp32, and
``precision`` in the result says which ran. Under torchrun each process evaluates a contiguous
shard of the points and the per-point estimates are gathered, so the result equals a single
process's (for Gaussian posteriors exactly; flows draw from each process's global generator);
only rank 0 writes the evaluation file (``evaluation-k{k}.json``, :func:`avi.runs.rundir.evaluation_path`;
``evaluation-best-k{k}.json`` for the best checkpoint) and the per-point estimates beside it
(``evaluation-k{k}-points.csv``).

The log-likelihood is reported three ways (:mod:`avi.evaluation.jackknife`): the IWAE bound with
its jackknife standard error (which, unlike the delta method's, holds for heavy-tailed weights);
the jackknife-debiased estimate with its standard error; and the nominal 95% interval for
log p(x), debiased ± 1.96 se, whose coverage holds while at most 10% of the points have a Pareto
k-hat over 0.7 (:mod:`avi.evaluation.psis`): beyond that ``pareto_k_warning`` says so.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from avi.atomic import atomic_write_bytes
from avi.data.dataset import Dataset
from avi.data.files import load_array_file
from avi.data.transforms import TRANSFORMS, make_transform
from avi.errors import ConfigError
from avi.evaluation.bounds import LogLikelihood, chunk_sizes, cubo_per_point, elbo_per_point, log_likelihood
from avi.evaluation.collapse import collapse_diagnostics
from avi.evaluation.consistency import consistency_kl, linear_probe_accuracy, posterior_means
from avi.evaluation.flow_use import flow_layer_use
from avi.evaluation.importance import fast_path
from avi.evaluation.jackknife import mean_with_stderr
from avi.evaluation.psis import KHAT_THRESHOLD, khat_summary, khat_warning
from avi.models.base import LatentVariableModel
from avi.precision import PRECISIONS, bf16_supported
from avi.runs import distributed
from avi.runs.build import prepare_data
from avi.runs.collapse import mi_settings
from avi.runs.hooks import DIAGNOSTIC_POINTS
from avi.runs.load import TrainedRun, available_device, infer_posterior, load_trained, resolve_device
from avi.runs.memory import sized_by
from avi.runs.rundir import evaluation_path, read_config, require_run, write_json
from avi.seeding import seeded

__all__ = ["run_evaluate"]

#: training points whose posterior means fit the linear probe
PROBE_POINTS = 10_000

#: the 97.5% quantile of the standard normal: half-width of a 95% interval in standard errors
Z95 = 1.959964

#: the columns of the per-point file, in :class:`~avi.evaluation.bounds.LogLikelihood`'s order
POINT_COLUMNS = (
    "log_likelihood", "log_likelihood_stderr", "log_likelihood_debiased", "log_likelihood_debiased_stderr",
    "pareto_k", "ess",
)  # fmt: skip


def run_evaluate(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    k: int | None = None,
    cubo: bool = False,
    consistency: bool = False,
    device: str | None = None,
    precision: str = "fp32",
    memory_budget: float | None = None,
    checkpoint: str = "last",
    compile: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a run on its test split (or the file ``data``): mean ELBO, reconstruction, KL and
    IWAE-k log p(x) in nats with the estimates and diagnostics of the module's docstring, the exact
    log p(x) where the model has one (``log_likelihood_exact``), and the collapse diagnostics (their
    draws seeded by ``train.seed``); a posterior that is not amortized is first inferred.

    With ``cubo`` it also holds ``cubo``, the chi upper bound CUBO_n (n = ``objective.cubo_order``)
    with the same k, and its standard error: ELBO <= log p(x) <= CUBO (the k-sample CUBO is
    biased low, so the upper side needs k large enough for q; Dieng et al. 2017).

    With ``consistency`` (an amortized posterior, 28x28 images) it also holds the metrics of
    Sinha and Dieng (2021): ``consistency_kl_translate``/``_rotate``, the mean KL(q(z|x) ||
    q(z|t(x))) for a random transform t, and ``probe_accuracy`` of a linear classifier on
    posterior means (None without labels).

    Scores the run's ``checkpoint``, "last" (checkpoint.pt) or "best" (best.pt, which
    ``train.early_stop`` keeps), named with its epoch in the result; each has its own files.

    Runs on ``device`` (cpu, cuda, auto; default the run's) in ``precision`` within ``memory_budget``
    MiB (see the module); with ``compile`` a Bernoulli MLP decoder's log-density runs through
    ``torch.compile`` (``compiled`` in the result says whether it did); ``on_batch(done, total)``
    reports sampling progress.
    """
    _check_options(precision, k)
    run = load_trained(require_run(run_dir, stopped=True), _device(run_dir, device), checkpoint)
    if consistency and not run.posterior.amortized:
        raise ConfigError("consistency metrics need an encoder of x; this run's posterior is not amortized")
    sampling = _sampling(run, k, precision, memory_budget, compile)
    test, source = _evaluation_data(run, data)
    x = test.x.to(run.device)
    _check_budget(run, sampling, len(distributed.shard(x.shape[0])))
    started = time.perf_counter()
    posterior = infer_posterior(run, x)
    inference_seconds = time.perf_counter() - started
    with seeded(run.config.train.seed, x.device):
        result = {"n": x.shape[0], "data": source, **_point_means(run.model, posterior, x), **_exact(run.model, x)}
    points, estimates = _importance_sampled(run, posterior, x, sampling, cubo, on_batch)
    path = evaluation_path(Path(run_dir), sampling["k"], data, checkpoint)
    seconds = {"inference_seconds": inference_seconds, "seconds": time.perf_counter() - started}
    result.update(estimates, **_scored(run, checkpoint, sampling, path), **seconds)
    if consistency:
        result.update(_representation(run, x, test.labels))
    if distributed.is_main():  # one file per k, data and checkpoint: a quick one never replaces a careful one
        _write_points(_points_path(path), points)
        write_json(path, result)
    return result


def _scored(run: TrainedRun, checkpoint: str, sampling: dict[str, Any], path: Path) -> dict[str, Any]:
    """What an evaluation scored and how: the checkpoint and its epoch, the per-point file, k,
    the strategy, the precision that ran and the processes."""
    return {
        "checkpoint": checkpoint,
        "checkpoint_epoch": run.epoch,
        "per_point_file": _points_path(path).name,
        "k": sampling["k"],
        "strategy": run.config.inference.strategy,
        "precision": sampling["precision"],
        "compiled": sampling["compile"],
        "processes": distributed.world_size(),
    }


def _check_options(precision: str, k: int | None) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if k is not None and k < 1:
        raise ConfigError(f"k must be a positive integer, got {k}")


def _device(run_dir: str | Path, device: str | None) -> torch.device:
    """The device to evaluate on (``device``, or the run's where this machine has it), joining
    the torchrun process group first where there is one, so that a CUDA run builds on this
    process's GPU (LOCAL_RANK)."""
    target = (
        available_device(read_config(require_run(run_dir)).train.device) if device is None else resolve_device(device)
    )
    distributed.init_from_env(target)  # the command line leaves the process group at exit
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    return target


def _evaluation_data(run: TrainedRun, data: str | Path | None) -> tuple[Dataset, str]:
    """The run's test split, or the file ``data`` prepared as the run's data (binarised with
    ``data.seed + 1``, labels kept for the linear probe) and checked against the model; and
    where it comes from."""
    if data is None:
        return run.splits.test, "test split"
    x, labels = load_array_file(data)
    test = prepare_data(x, run.config, f"data file {data}").binarized(run.config.data.seed + 1)
    if labels is not None:
        test = replace(test, labels=torch.as_tensor(labels))
    run.model.check_data(test.x, f"data file {data}")
    return test, str(data)


def _sampling(
    run: TrainedRun, k: int | None, precision: str, memory_budget: float | None, compile: bool = False
) -> dict[str, Any]:
    """The importance-sampling settings: k (default ``evaluate.k``), the noise seed
    ``train.seed``, the precision that will run (bf16 only where the device has it and the model
    a fast path), whether the decoder is compiled (only on that path) and the chunk sizes of
    ``evaluate`` (``memory_budget`` overriding its budget)."""
    settings = run.config.evaluate
    if precision == "bf16" and not (bf16_supported(run.device) and fast_path(run.model)):
        precision = "fp32"
    return {
        "k": settings.k if k is None else k,
        "seed": run.config.train.seed,
        "precision": precision,
        "compile": compile and fast_path(run.model),
        "batch_size": settings.batch_size,
        "chunk_size": settings.chunk_size,
        "memory_budget": settings.memory_budget if memory_budget is None else memory_budget,
    }


def _check_budget(run: TrainedRun, sampling: dict[str, Any], points: int) -> None:
    """Raise :class:`ConfigError` where the chunks do not fit the memory budget, with the worker
    threads that sampling will use, so that a bad budget fails before the slow parts."""
    workers = 1 if run.device.type != "cpu" else max(1, min(torch.get_num_threads(), points))
    sizes = {key: sampling[key] for key in ("precision", "compile", "batch_size", "chunk_size", "memory_budget")}
    chunk_sizes(run.model, sampling["k"], workers=workers, **sizes)


def _importance_sampled(
    run: TrainedRun,
    posterior: nn.Module,
    x: Tensor,
    sampling: dict[str, Any],
    cubo: bool,
    on_batch: Callable[[int, int], None] | None,
) -> tuple[Tensor, dict[str, Any]]:
    """The per-point IWAE-k estimates of log p(x) (N, 6: :data:`POINT_COLUMNS`), each over this
    process's shard of x gathered from every process; and their summary
    (:func:`_log_likelihood_summary`), with, where ``cubo``, the CUBO_n estimate (n =
    ``objective.cubo_order``) and its jackknife standard error, and the seconds it took;
    ``on_batch(done, total)`` reports the points done."""
    started, n, order = time.perf_counter(), x.shape[0], run.config.objective.cubo_order
    shard = distributed.shard(n)
    common = {**sampling, "points": shard, "on_batch": _progress(on_batch, len(shard) * (1 + cubo))}
    upper: dict[str, Any] = {}
    with sized_by({f"evaluate.{key}": sampling[key] for key in ("k", "batch_size", "chunk_size") if key in sampling}):
        points = _gathered(log_likelihood(run.model, posterior, x, **common), n)
        if cubo:
            value, stderr = _gathered(cubo_per_point(run.model, posterior, x, n=order, **common), n).T[:2]
            upper = dict(zip(("cubo", "cubo_stderr"), mean_with_stderr(value, stderr), strict=True), cubo_order=order)
    return points, {**_log_likelihood_summary(points), **upper, "sampling_seconds": time.perf_counter() - started}


def _log_likelihood_summary(points: Tensor) -> dict[str, Any]:
    """The means over points (N, 6: :data:`POINT_COLUMNS`) of the IWAE bound and of the
    debiased estimate with their standard errors, the 95% interval for mean log p(x) (debiased ±
    :data:`Z95` se), k-hat's median, share of points over the threshold and points with a k-hat,
    a warning where that share is too large, and the effective sample size's median and minimum.
    NaN (null in JSON) where undefined: standard errors for k < 3, k-hat for k < 21."""
    value, stderr, debiased, debiased_stderr, khat, ess = points.T
    mean, se = mean_with_stderr(value, stderr)
    centre, half = mean_with_stderr(debiased, debiased_stderr)
    tails = khat_summary(khat)
    return {
        "log_likelihood": mean,
        "log_likelihood_stderr": se,
        "log_likelihood_debiased": centre,
        "log_likelihood_debiased_stderr": half,
        "log_likelihood_interval": [centre - Z95 * half, centre + Z95 * half],
        "stderr_method": "jackknife",
        "pareto_k": {"median": tails.median, f"share_over_{KHAT_THRESHOLD}": tails.share_over, "points": tails.points},
        "pareto_k_warning": khat_warning(tails),
        "ess": {"median": ess.median().item(), "min": ess.min().item()},
    }


def _exact(model: LatentVariableModel, x: Tensor) -> dict[str, float]:
    """The exact mean log p(x) as ``log_likelihood_exact``, where the model has one (PPCA,
    factor analysis, Gaussian mixtures), else nothing."""
    exact = getattr(model, "exact_log_marginal", None)
    if exact is None:
        return {}
    with torch.no_grad():
        return {"log_likelihood_exact": exact(x).mean().item()}


def _points_path(evaluation: Path) -> Path:
    """The per-point file beside an evaluation file: ``evaluation-k5000.json`` -> ``evaluation-k5000-points.csv``."""
    return evaluation.with_name(f"{evaluation.stem}-points.csv")


def _write_points(path: Path, points: Tensor) -> None:
    """The per-point estimates (N, 6) as CSV, one row per point (``point`` its index in the data,
    then :data:`POINT_COLUMNS`; ``nan`` where undefined), atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("point", *POINT_COLUMNS))
    writer.writerows((i, *(f"{v:.9g}" for v in row)) for i, row in enumerate(points.double().cpu().tolist()))
    atomic_write_bytes(path, text.getvalue().encode())


def _point_means(model: LatentVariableModel, posterior: nn.Module, x: Tensor) -> dict[str, Any]:
    """Mean ELBO, reconstruction and KL over x, and the collapse diagnostics (KL per latent
    dimension, active units in all and per latent layer, I(x; z)) on the first 1,000 points, as
    in training (a flow's mutual information on the first 100: :func:`~avi.runs.collapse.mi_settings`);
    for a finite flow (planar, radial, Sylvester) also how much each layer reshapes q
    (:func:`~avi.evaluation.flow_use.flow_layer_use`, None for other families)."""
    elbo, reconstruction, kl = (v.mean().item() for v in elbo_per_point(model, posterior, x))
    collapse = collapse_diagnostics(model, posterior, x[:DIAGNOSTIC_POINTS], **mi_settings(posterior))
    reshaping = flow_layer_use(posterior, x[:DIAGNOSTIC_POINTS])
    return {
        "elbo": elbo,
        "reconstruction": reconstruction,
        "kl": kl,
        "kl_per_dim": collapse.kl_per_dim.tolist(),
        "active_units": collapse.active_units,
        "active_units_per_layer": list(collapse.active_units_per_layer),
        "mutual_information": collapse.mutual_information,
        "flow_layer_reshaping": None if reshaping is None else reshaping.tolist(),
    }


def _progress(on_batch: Callable[[int, int], None] | None, total: int) -> Callable[[int], None]:
    """A per-batch callback that reports (points done so far, ``total``) to ``on_batch``."""
    done = 0

    def report(count: int) -> None:
        nonlocal done
        done += count
        if on_batch is not None:
            on_batch(done, total)

    return report


def _gathered(local: LogLikelihood, n: int) -> Tensor:
    """The per-point estimates of every process's shard as columns (N, 6), in
    :class:`~avi.evaluation.bounds.LogLikelihood`'s order (:data:`POINT_COLUMNS`), in point
    order, on every process."""
    return distributed.gather_shards(torch.stack([v for v in local if isinstance(v, Tensor)], 1), n)


def _representation(run: TrainedRun, x: Tensor, labels: Tensor | None) -> dict[str, Any]:
    """Consistency KLs of the run's encoder on x (one seeded transform draw per point) and, where
    x and the training split have labels, a linear probe fitted on the posterior means of the
    first ``PROBE_POINTS`` training points (one fixed binarisation), scored on x."""
    out: dict[str, Any] = {}
    for name in TRANSFORMS:
        with seeded(run.config.train.seed + 1, run.device):
            out[f"consistency_kl_{name}"] = consistency_kl(run.posterior, x, make_transform(name)).mean().item()
    train = run.splits.train
    out["probe_accuracy"] = None
    if labels is not None and train.labels is not None:
        train = train.subset(slice(0, PROBE_POINTS)).binarized(run.config.data.seed + 2).to(run.device)
        out["probe_accuracy"] = linear_probe_accuracy(
            posterior_means(run.posterior, train.x),
            cast(Tensor, train.labels),  # the subset of the labelled split checked above keeps its labels
            posterior_means(run.posterior, x),
            labels.to(run.device),
        )
    return out
