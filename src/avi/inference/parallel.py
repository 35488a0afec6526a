"""Data-parallel training steps with PyTorch's DistributedDataParallel.

Every rank computes the objective on its shard of a global batch; DDP averages the gradients of
the model and encoder over the ranks. Each rank scales its loss so that this average is the
gradient a single process computes for the mean over the global batch of B points:

    loss_r = -(W / B) * sum_{i in shard r} value_i,   (1/W) sum_r grad loss_r = -grad (1/B) sum_i value_i,

with W the world size; B is the size of the step's global batch (smaller for the last one).

A control variate with parameters (NVIL's baseline network b(x)) is a submodule of the step, so
DDP averages its gradients too and every rank fits the same b(x). The statistics of the batch
that an objective reads (free bits' KL per dimension, a baseline's mean signal) are over the
global batch: the step passes :func:`global_mean` to the objective, and the loop passes it to
the estimator's state update (:class:`~avi.objectives.estimators.MovingAverageBaseline`).

A per-datapoint table (:class:`~avi.inference.local.LocalPosterior`) is kept out of DDP: its
gradient is sparse and touches only the rows of the batch. :func:`sync_table_grad` gathers the
rows of all shards into one sparse gradient, the same on every rank, so that each rank's
``SparseAdam`` makes the single-process update and every rank holds the whole, current table
(a point lands on a different rank in every epoch, because every epoch reshuffles). A
checkpoint written by rank 0 is therefore a single-process checkpoint.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from avi.families.posterior import Posterior
from avi.models.base import LatentVariableModel
from avi.objectives.bounds import Terms
from avi.objectives.select import Objective

__all__ = ["ShardStep", "data_parallel", "global_mean", "sync_table_grad"]


def global_mean(values: Tensor) -> Tensor:
    """The mean over dimension 0 of ``values`` (B, ...), without gradient; in a process group,
    over the global batch: the ranks' sums and counts are all-reduced (the shards may differ in
    size, and may be empty: the last global batch can leave a rank no points). Outside one, the
    local mean (:func:`~avi.objectives.batch.local_mean`)."""
    values = values.detach()
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values.mean(0)
    totals = values.new_zeros((values.shape[1:].numel() + 1,), dtype=torch.float64)  # counts exact
    totals[:-1] = values.sum(0).reshape(-1)
    totals[-1] = values.shape[0]
    dist.all_reduce(totals)
    return (totals[:-1] / totals[-1]).reshape(values.shape[1:]).to(values.dtype)


class ShardStep(nn.Module):
    """One training step's forward pass as a module, for DDP's hooks and for torch.compile
    (:func:`~avi.inference.fit.compile_step`): ``forward(x, index, objective)`` is the per-point
    :class:`Terms` (B_r,) of the batch or local shard, ``objective(model, posterior(x, index), x,
    state=state, batch_mean=global_mean)``: ``state``, the objective's estimator state (NVIL's
    baseline network), is held so that DDP sees its parameters, and the objective's batch
    statistics are over the global batch."""

    def __init__(self, model: LatentVariableModel, posterior: Posterior, state: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.posterior = posterior
        self.state = state

    def forward(self, x: Tensor, index: Tensor, objective: Objective) -> Terms:
        return objective(self.model, self.posterior(x, index), x, state=self.state, batch_mean=global_mean)


def data_parallel(model: LatentVariableModel, posterior: Posterior, baseline: nn.Module | None = None) -> nn.Module:
    """``ShardStep(model, posterior, baseline)`` wrapped in DDP (a per-datapoint table left out
    of it), which starts every rank from rank 0's parameters and buffers.

    Without a dense trainable parameter (per-datapoint VI against a fixed model) there is
    nothing for DDP to average and the step is returned unwrapped.
    """
    step = ShardStep(model, posterior, baseline)
    tables = {id(p) for g in posterior.param_groups() if g.table for p in g.params}
    ignored = [f"posterior.{name}" for name, p in posterior.named_parameters() if id(p) in tables]
    if not any(p.requires_grad for name, p in step.named_parameters() if name not in ignored):
        return step
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, ignored)
    device = next(step.parameters()).device
    return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)


def sync_table_grad(table: nn.Parameter, index: Tensor, *, rank: int, world_size: int, batch: int) -> None:
    """Replace the sparse gradient of ``table`` for this rank's rows ``index`` (positions
    ``rank::world_size`` of the global batch of ``batch`` points) by the gradient of the whole
    batch, divided by ``world_size`` (undoing the loss scale above): the same on every rank."""
    width = table.shape[1]
    values = torch.zeros(batch, width, dtype=table.dtype, device=table.device)
    rows = torch.zeros(batch, dtype=torch.long, device=table.device)
    if table.grad is not None and index.numel():
        grad = table.grad.coalesce()  # rows sorted and unique: find each index's row
        values[rank::world_size] = grad.values()[torch.searchsorted(grad.indices()[0], index.contiguous())]
    rows[rank::world_size] = index
    dist.all_reduce(values)
    dist.all_reduce(rows)
    table.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values / world_size, table.shape, check_invariants=False)
