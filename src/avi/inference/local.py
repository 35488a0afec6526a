"""Per-datapoint posteriors: one variational parameter set per observation, held in one tensor."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import AviError
from avi.families import Family

__all__ = ["LocalPosterior"]


class LocalPosterior(nn.Module):
    """q(z | x_i) = family(table[i]): classic VI with a free lambda for every point i.

    The table is a single (N, P) parameter, looked up with a sparse gradient so that an
    optimiser (``torch.optim.SparseAdam``) touches only the rows of the current batch.
    """

    def __init__(self, n_points: int, family: Family, initial: Tensor | None = None, init_scale: float = 1.0) -> None:
        super().__init__()
        self.family = family
        if initial is None:
            initial = family.initial_params(n_points, init_scale)
        if initial.shape != (n_points, family.param_size):
            raise AviError(
                f"initial parameters must have shape ({n_points}, {family.param_size}), got {tuple(initial.shape)}"
            )
        self.table = nn.Parameter(initial.detach().clone())

    @property
    def n_points(self) -> int:
        return self.table.shape[0]

    def params(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """lambda for the points ``index``: (B, P)."""
        if index is None:
            raise AviError("a per-datapoint posterior needs the data-point indices of the batch")
        return F.embedding(index, self.table, sparse=True)

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        return self.family(self.params(x, index))

    def extra_repr(self) -> str:
        return f"n_points={self.n_points}, param_size={self.table.shape[1]}"
