"""One process of the data-parallel tests in ``test_distributed.py``.

``python ddp_worker.py STRATEGY OUT`` fits PPCA with an amortized or per-datapoint posterior
(``free-bits``: amortized, with free bits; ``compiled``: amortized, through
:func:`avi.inference.fit.compile_step` of the DDP-wrapped step) for two epochs by
:func:`avi.inference.fit.train_epoch` and saves the final parameters to
``OUT.format(rank=RANK)``; ``python ddp_worker.py nvil OUT`` trains with NVIL's baseline and
saves the baseline (:func:`nvil`). Run
with torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
it joins that process group and trains its shard; run without, it is the single-process
reference. The objective is deterministic (log p(x, z) at the mean of q plus the entropy of q),
so that both see the same numbers and only the arithmetic of data parallelism differs.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.families import make_family
from avi.inference import LocalPosterior
from avi.inference.fit import compile_step
from avi.inference.loop import Replicas, train_epoch
from avi.inference.parallel import ShardStep, data_parallel, global_mean
from avi.inference.state import TrainState, make_optimizers
from avi.models import LinearGaussian
from avi.objectives import ELBO
from avi.objectives.batch import BatchMean, local_mean
from avi.objectives.bounds import Terms
from avi.objectives.estimators import MovingAverageBaseline, NVILBaseline
from avi.objectives.weighted import free_bits_kl
from avi.runs import distributed

#: 53 points in batches of 8: the last global batch of 5 splits 3 + 2 over two ranks
POINTS, BATCH = 53, 8

#: free bits per dimension (nats), near the KL per dimension of the worker's fits
FREE_BITS = 0.5

#: a learning signal (S = 3 draws, B = 7 points, split 3 + 4) whose parts have different means
SIGNAL = torch.arange(21.0).reshape(3, 7) ** 2

#: KL per dimension of 7 points in 2 dimensions (split 3 + 4)
KL_DIMS = torch.arange(14.0).reshape(7, 2) ** 2


def mean_field_objective(model: LinearGaussian, q: Distribution, x: Tensor, **_: object) -> Terms:
    """log p(x, mean of q) + H[q] per point: a deterministic stand-in for the ELBO."""
    z = q.mean.unsqueeze(0)
    reconstruction = model.likelihood(z).log_prob(x).squeeze(0)
    value = model.log_joint(x, z).squeeze(0) + q.entropy()
    return Terms(value, reconstruction, reconstruction - value)


def free_bits_objective(
    model: LinearGaussian,
    q: Distribution,
    x: Tensor,
    *,
    state: nn.Module | None = None,
    batch_mean: BatchMean = local_mean,
) -> Terms:
    """:func:`mean_field_objective` with free bits on the analytic KL per dimension: which
    dimensions are clamped depends on the KL averaged over the batch ``batch_mean`` takes (the
    global batch: the data-parallel step passes its mean)."""
    z = q.mean.unsqueeze(0)
    reconstruction = model.likelihood(z).log_prob(x).squeeze(0)
    kl_dims = kl_divergence(q.base_dist, model.prior().base_dist)
    return Terms(reconstruction - free_bits_kl(kl_dims, FREE_BITS, batch_mean), reconstruction, kl_dims.sum(-1))


def main(strategy: str, out: str) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env(torch.device("cpu"), BATCH)
    torch.manual_seed(0)
    x = torch.randn(POINTS, 6, generator=torch.Generator().manual_seed(1))
    model = LinearGaussian(6, 2)
    family = make_family("mean-field", 2)
    posterior: nn.Module = (
        LocalPosterior(POINTS, family) if strategy == "per-datapoint" else AmortizedPosterior(mlp_encoder(6, (4,), family.param_size), family)
    )
    objective = free_bits_objective if strategy == "free-bits" else mean_field_objective
    optimizers = make_optimizers(model, posterior, lr=0.05, local_lr=0.1)
    generator = torch.Generator().manual_seed(2)
    step = data_parallel(model, posterior) if distributed.world_size() > 1 else None
    if strategy == "compiled":
        step = compile_step(step or ShardStep(model, posterior), Dataset(x))
    state = TrainState(model, posterior, optimizers, generator)
    replicas = Replicas(distributed.rank(), distributed.world_size(), step)
    stats = [train_epoch(state, Dataset(x), objective, batch_size=BATCH, replicas=replicas) for _ in range(2)]
    torch.save({"model": model.state_dict(), "posterior": posterior.state_dict(), "objective": [s.objective for s in stats]}, out.format(rank=distributed.rank()))


def nvil(out: str) -> None:
    """Two epochs of the score-function ELBO with NVIL's baseline on 49 points (the last global
    batch of one point is padded to one point per rank); saves the baseline, a moving average
    updated with this rank's columns of :data:`SIGNAL`, and batch means of its rows of
    :data:`KL_DIMS` and of all rows on rank 0 with none on rank 1."""
    torch.set_num_threads(1)
    distributed.init_from_env(torch.device("cpu"), BATCH)
    torch.manual_seed(distributed.rank())  # different noise, and different initial weights: DDP syncs them
    x = torch.randn(49, 6, generator=torch.Generator().manual_seed(1))
    model, family = LinearGaussian(6, 2), make_family("mean-field", 2)
    posterior = AmortizedPosterior(mlp_encoder(6, (4,), family.param_size), family)
    baseline = NVILBaseline(6, hidden=4)
    optimizers = make_optimizers(model, posterior, lr=0.05, estimator=baseline)
    step = data_parallel(model, posterior, baseline) if distributed.world_size() > 1 else None
    state = TrainState(model, posterior, optimizers, torch.Generator().manual_seed(2), baseline)
    replicas = Replicas(distributed.rank(), distributed.world_size(), step)
    for _ in range(2):
        train_epoch(state, Dataset(x), ELBO(estimator="nvil"), batch_size=BATCH, replicas=replicas)
    average = MovingAverageBaseline()
    columns = distributed.shard(SIGNAL.shape[1])
    average.update(global_mean(SIGNAL[:, columns.start : columns.stop].reshape(-1)))
    rows = distributed.shard(KL_DIMS.shape[0])
    state = {
        "baseline": baseline.state_dict(),
        "average": average.value,
        "kl_mean": global_mean(KL_DIMS[rows.start : rows.stop]),
        "kl_mean_one_rank": global_mean(KL_DIMS[: 7 if distributed.rank() == 0 else 0]),  # rank 1 has no rows
    }
    torch.save(state, out.format(rank=distributed.rank()))


if __name__ == "__main__":
    if sys.argv[1] == "nvil":
        nvil(sys.argv[2])
    else:
        main(*sys.argv[1:])
    distributed.shutdown()  # at the edge, as the command line: the DDP wrappers are garbage by now
