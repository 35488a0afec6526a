"""Statistics of the training batch that an objective reads, such as free bits' KL per
dimension and a baseline's mean signal: under data parallelism each rank holds a shard of the
global batch, and these means are over the whole of it (as SyncBatchNorm's statistics are), so
that every rank computes what one process computes on the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["batch_mean"]


def batch_mean(values: Tensor) -> Tensor:
    """The mean over dimension 0 of ``values`` (B, ...), without gradient; in a process group,
    over the global batch: the ranks' sums and counts are all-reduced (the shards may differ in
    size, and may be empty: the last global batch can leave a rank no points)."""
    values = values.detach()
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values.mean(0)
    totals = values.new_zeros((values.shape[1:].numel() + 1,), dtype=torch.float64)  # counts exact
    totals[:-1] = values.sum(0).reshape(-1)
    totals[-1] = values.shape[0]
    dist.all_reduce(totals)
    return (totals[:-1] / totals[-1]).reshape(values.shape[1:]).to(values.dtype)
