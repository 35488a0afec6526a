"""``avi evaluate``: test ELBO and importance-sampled log-likelihood of a trained run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avi.data.files import load_array_file
from avi.data.transforms import TRANSFORMS, make_transform
from avi.errors import ConfigError
from avi.evaluation.bounds import cubo_per_point, elbo_per_point, log_likelihood
from avi.evaluation.collapse import collapse_diagnostics
from avi.evaluation.consistency import consistency_kl, linear_probe_accuracy, posterior_means
from avi.inference.local import LocalPosterior
from avi.inference.refine import infer
from avi.runs.build import prepare_data
from avi.runs.collapse import MI_BATCH_SIZE
from avi.runs.rundir import EVALUATION, write_json
from avi.runs.train import DIAGNOSTIC_POINTS, TrainedRun, load_trained

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
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a run on its test split (or on the file ``data``): mean ELBO, reconstruction,
    KL and the IWAE-k estimate of log p(x) per point, in nats, and the collapse diagnostics (KL
    per latent dimension, active units, mutual information I(x; z)) on the first 1,000 points.
    A per-datapoint run first infers
    posteriors for the points with the model fixed (``inference.infer_steps`` steps).

    With ``cubo`` the result also holds ``cubo``, the chi upper bound CUBO_n (n =
    ``objective.cubo_order``, default 2) estimated with the same k and its standard error: with
    the ELBO it sandwiches log p(x), ELBO <= log p(x) <= CUBO (the k-sample CUBO estimate is
    biased low, so the upper side holds only for k large enough for q; Dieng et al. 2017).

    With ``consistency`` (an encoder and 28x28 images) the result also holds the representation
    metrics of Sinha and Dieng (2021): ``consistency_kl_translate`` and ``consistency_kl_rotate``,
    the mean KL(q(z|x) || q(z|t(x))) for a random transform t, and ``probe_accuracy``, the test
    accuracy of a linear classifier on posterior means (None without labels).

    ``on_batch(done, total)`` reports progress of the importance sampling.
    """
    run = load_trained(run_dir)
    config = run.config
    k = config.evaluate.k if k is None else k
    if k < 1:
        raise ConfigError(f"k must be a positive integer, got {k}")
    if data is None:
        test = run.splits.test
        source = "test split"
    else:
        x, _ = load_array_file(data)
        test = prepare_data(x, config, f"data file {data}").binarized(config.data.seed + 1)
        run.model.check_data(test.x, f"data file {data}")
        source = str(data)
    x = test.x.to(run.device)
    started = time.perf_counter()
    posterior = run.posterior
    if isinstance(posterior, LocalPosterior):
        posterior = infer(run.model, posterior, x, steps=config.inference.infer_steps, lr=config.inference.local_lr)
    inference_seconds = time.perf_counter() - started
    elbo, reconstruction, kl = elbo_per_point(run.model, posterior, x)
    # on the first 1,000 points, as in training: the pairwise MI estimate costs a pass per latent
    # dimension for an inverse autoregressive flow
    collapse = collapse_diagnostics(run.model, posterior, x[:DIAGNOSTIC_POINTS], batch_size=MI_BATCH_SIZE)
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if on_batch is not None:
            on_batch(done, x.shape[0] * (2 if cubo else 1))

    ll = log_likelihood(
        run.model,
        posterior,
        x,
        k=k,
        batch_size=config.evaluate.batch_size,
        chunk_size=config.evaluate.chunk_size,
        on_batch=report,
    )
    upper = None
    if cubo:
        upper = cubo_per_point(
            run.model,
            posterior,
            x,
            n=config.objective.cubo_order,
            k=k,
            batch_size=config.evaluate.batch_size,
            chunk_size=config.evaluate.chunk_size,
            on_batch=report,
        )
    n = x.shape[0]
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
        "seconds": time.perf_counter() - started,
    }
    if upper is not None:
        result.update(
            cubo=upper.value.mean().item(),
            cubo_stderr=math.sqrt(upper.stderr.pow(2).sum().item()) / n,
            cubo_order=config.objective.cubo_order,
        )
    if consistency:
        result.update(_representation(run, x, test.labels))
    if data is None:
        write_json(Path(run_dir) / EVALUATION, result)
    return result


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
            posterior_means(run.posterior, train.x), train.labels, posterior_means(run.posterior, x), labels.to(run.device)
        )
    return out
