"""``avi evaluate``: test ELBO and importance-sampled log-likelihood of a trained run."""

from __future__ import annotations

import atexit
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avi.data.files import load_array_file
from avi.data.transforms import TRANSFORMS, make_transform
from avi.errors import ConfigError
from avi.evaluation.bounds import LogLikelihood, chunk_sizes, cubo_per_point, elbo_per_point, log_likelihood
from avi.evaluation.collapse import collapse_diagnostics
from avi.evaluation.consistency import consistency_kl, linear_probe_accuracy, posterior_means
from avi.evaluation.importance import fast_path
from avi.inference.local import LocalPosterior
from avi.precision import PRECISIONS, bf16_supported
from avi.runs import distributed
from avi.runs.build import prepare_data
from avi.runs.collapse import mi_settings
from avi.runs.rundir import EVALUATION, read_config, require_run, write_json
from avi.runs.train import (
    DIAGNOSTIC_POINTS,
    TrainedRun,
    available_device,
    infer_posterior,
    load_trained,
    resolve_device,
)

__all__ = ["run_evaluate"]

#: training points whose posterior means fit the linear probe
PROBE_POINTS = 10_000


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
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a run on its test split (or on the file ``data``): mean ELBO, reconstruction,
    KL and the IWAE-k estimate of log p(x) per point, in nats, and the collapse diagnostics (KL
    per latent dimension, active units, mutual information I(x; z)) on the first 1,000 points.
    A per-datapoint run first infers
    posteriors for the points with the model fixed (:func:`~avi.runs.train.infer_posterior`).

    With ``cubo`` the result also holds ``cubo``, the chi upper bound CUBO_n (n =
    ``objective.cubo_order``, default 2) estimated with the same k and its standard error: with
    the ELBO it sandwiches log p(x), ELBO <= log p(x) <= CUBO (the k-sample CUBO estimate is
    biased low, so the upper side holds only for k large enough for q; Dieng et al. 2017).

    With ``consistency`` (an encoder and 28x28 images) the result also holds the representation
    metrics of Sinha and Dieng (2021): ``consistency_kl_translate`` and ``consistency_kl_rotate``,
    the mean KL(q(z|x) || q(z|t(x))) for a random transform t, and ``probe_accuracy``, the test
    accuracy of a linear classifier on posterior means (None without labels).

    The importance sampling runs in chunks sized by ``memory_budget`` MiB (default: the config's
    ``evaluate.memory_budget``, else ``evaluate.batch_size`` x ``evaluate.chunk_size`` or
    cache-sized chunks; :func:`~avi.evaluation.bounds.chunk_sizes`), on ``device`` (cpu, cuda
    or auto; default the run's), with the noise of test point i seeded by (``train.seed``, i).
    ``precision="bf16"`` runs a Bernoulli MLP decoder under bfloat16 autocast; where the device
    has no native bf16 or the model no fast path it runs in fp32, and ``precision`` in the
    result says which ran. Under torchrun each process evaluates a contiguous shard of the
    points and the per-point estimates are gathered, so the result equals a single process's
    (for Gaussian posteriors exactly; flows draw from each process's global generator); only
    rank 0 writes ``evaluation.json``.

    ``on_batch(done, total)`` reports progress of the importance sampling (of this process's shard).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if k is not None and k < 1:
        raise ConfigError(f"k must be a positive integer, got {k}")
    run_dir = require_run(run_dir)
    target = available_device(read_config(run_dir).train.device) if device is None else resolve_device(device)
    if distributed.init_from_env(target):  # joined first, so that a CUDA run builds on this rank's GPU
        atexit.register(distributed.shutdown)
    if target.type == "cuda" and target.index is None:  # this process's GPU (LOCAL_RANK under torchrun)
        target = torch.device("cuda", torch.cuda.current_device())
    run = load_trained(run_dir, target)
    config = run.config
    k = config.evaluate.k if k is None else k
    if precision == "bf16" and not (bf16_supported(run.device) and fast_path(run.model)):
        precision = "fp32"
    memory_budget = config.evaluate.memory_budget if memory_budget is None else memory_budget
    sizes = {
        "batch_size": config.evaluate.batch_size,
        "chunk_size": config.evaluate.chunk_size,
        "memory_budget": memory_budget,
    }
    if data is None:
        test = run.splits.test
        source = "test split"
    else:
        x, labels = load_array_file(data)
        test = prepare_data(x, config, f"data file {data}").binarized(config.data.seed + 1)
        if labels is not None:  # for the linear probe of --consistency
            test = replace(test, labels=torch.as_tensor(labels))
        run.model.check_data(test.x, f"data file {data}")
        source = str(data)
    x = test.x.to(run.device)
    n = x.shape[0]
    shard = distributed.shard(n)
    # a bad budget fails before the slow parts, with the worker threads that sampling will use
    workers = 1 if run.device.type != "cpu" else max(1, min(torch.get_num_threads(), len(shard)))
    chunk_sizes(run.model, k, workers=workers, precision=precision, **sizes)
    started = time.perf_counter()
    posterior = infer_posterior(run, x)
    inference_seconds = time.perf_counter() - started
    elbo, reconstruction, kl = elbo_per_point(run.model, posterior, x)
    # on the first 1,000 points, as in training (a flow's MI on the first 100: mi_settings)
    collapse = collapse_diagnostics(run.model, posterior, x[:DIAGNOSTIC_POINTS], **mi_settings(posterior))
    done = 0

    def report(count: int) -> None:
        nonlocal done
        done += count
        if on_batch is not None:
            on_batch(done, len(shard) * (2 if cubo else 1))

    sampling_started = time.perf_counter()
    common = {"k": k, "seed": config.train.seed, "points": shard, "precision": precision, "on_batch": report, **sizes}
    ll = _gathered(log_likelihood(run.model, posterior, x, **common), n)
    upper = None
    if cubo:
        upper = _gathered(cubo_per_point(run.model, posterior, x, n=config.objective.cubo_order, **common), n)
    sampling_seconds = time.perf_counter() - sampling_started
    result = {
        "n": n,
        "data": source,
        "elbo": elbo.mean().item(),
        "reconstruction": reconstruction.mean().item(),
        "kl": kl.mean().item(),
        "log_likelihood": ll.value.mean().item(),
        "log_likelihood_stderr": math.sqrt(ll.stderr.pow(2).sum().item()) / n,
        "k": k,
        "kl_per_dim": collapse.kl_per_dim.tolist(),
        "active_units": collapse.active_units,
        "mutual_information": collapse.mutual_information,
        "strategy": config.inference.strategy,
        "inference_seconds": inference_seconds,
        "sampling_seconds": sampling_seconds,
        "seconds": time.perf_counter() - started,
        "precision": precision,
        "processes": distributed.world_size(),
    }
    if upper is not None:
        result.update(
            cubo=upper.value.mean().item(),
            cubo_stderr=math.sqrt(upper.stderr.pow(2).sum().item()) / n,
            cubo_order=config.objective.cubo_order,
        )
    if consistency:
        result.update(_representation(run, x, test.labels))
    if data is None and distributed.is_main():
        write_json(Path(run_dir) / EVALUATION, result)
    return result


def _gathered(local: LogLikelihood, n: int) -> LogLikelihood:
    """The per-point estimates of every process's shard, in point order, on every process."""
    value, stderr = distributed.gather_shards(torch.stack([local.value, local.stderr], dim=1), n).T
    return LogLikelihood(value, stderr, local.k)


def _representation(run: TrainedRun, x: Tensor, labels: Tensor | None) -> dict[str, Any]:
    """Consistency KLs of the run's encoder on x (one seeded transform draw per point) and, where
    x and the training split have labels, a linear probe fitted on the posterior means of the
    first ``PROBE_POINTS`` training points (one fixed binarisation), scored on x."""
    if isinstance(run.posterior, LocalPosterior):
        raise ConfigError("consistency metrics need an encoder of x; this run is per-datapoint")
    out: dict[str, Any] = {}
    for name in TRANSFORMS:
        torch.manual_seed(run.config.train.seed + 1)
        out[f"consistency_kl_{name}"] = consistency_kl(run.posterior, x, make_transform(name)).mean().item()
    train = run.splits.train
    out["probe_accuracy"] = None
    if labels is not None and train.labels is not None:
        train = train.subset(slice(0, PROBE_POINTS)).binarized(run.config.data.seed + 2).to(run.device)
        out["probe_accuracy"] = linear_probe_accuracy(
            posterior_means(run.posterior, train.x),
            train.labels,
            posterior_means(run.posterior, x),
            labels.to(run.device),
        )
    return out
