"""One process of the data-parallel tests in ``test_distributed.py``.

``python ddp_worker.py STRATEGY OUT`` fits PPCA with an amortized or per-datapoint posterior
for two epochs by :func:`avi.inference.fit.train_epoch` and saves the final parameters to
``OUT.format(rank=RANK)``. Run
with torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
it joins that process group and trains its shard; run without, it is the single-process
reference. The objective is deterministic (log p(x, z) at the mean of q plus the entropy of q),
so that both see the same numbers and only the arithmetic of data parallelism differs.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.families import make_family
from avi.inference import LocalPosterior
from avi.inference.fit import make_optimizers, train_epoch
from avi.models import LinearGaussian
from avi.objectives.bounds import Terms
from avi.runs import distributed

#: 53 points in batches of 8: the last global batch of 5 splits 3 + 2 over two ranks
POINTS, BATCH = 53, 8


def mean_field_objective(model: LinearGaussian, q: Distribution, x: Tensor) -> Terms:
    """log p(x, mean of q) + H[q] per point: a deterministic stand-in for the ELBO."""
    z = q.mean.unsqueeze(0)
    reconstruction = model.likelihood(z).log_prob(x).squeeze(0)
    value = model.log_joint(x, z).squeeze(0) + q.entropy()
    return Terms(value, reconstruction, reconstruction - value)


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
    optimizers = make_optimizers(model, posterior, lr=0.05, local_lr=0.1)
    generator = torch.Generator().manual_seed(2)
    stats = [
        train_epoch(
            model,
            posterior,
            Dataset(x),
            optimizers,
            objective=mean_field_objective,
            batch_size=BATCH,
            generator=generator,
            rank=distributed.rank(),
            world_size=distributed.world_size(),
        )
        for _ in range(2)
    ]
    torch.save({"model": model.state_dict(), "posterior": posterior.state_dict(), "objective": [s.objective for s in stats]}, out.format(rank=distributed.rank()))
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
