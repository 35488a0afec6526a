"""Per-datapoint posteriors: one variational parameter set per observation, held in one tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import AviError
from avi.families import Family
from avi.families.posterior import ParamGroup, PointInference, Posterior
from avi.inference.refine import refine_params
from avi.models.base import LatentVariableModel
from avi.nn import eval_mode
from avi.objectives.select import Objective

__all__ = ["LocalPosterior", "infer"]


class LocalPosterior(Posterior):
    """q(z | x_i) = family(table[i]): classic VI with a free lambda for every point i.

    The table is a single (N, P) parameter, looked up with a sparse gradient so that an
    optimiser (``torch.optim.SparseAdam``) touches only the rows of the current batch. New
    points get a table of their own, optimised with the model fixed (:meth:`infer_params`).
    """

    amortized = False

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

    def param_groups(self) -> list[ParamGroup]:
        """The table (sparse rows), and a flow family's shared weights (dense) where it has them."""
        shared = tuple(p for p in self.parameters() if p is not self.table and p.requires_grad)
        return [ParamGroup((self.table,), table=True)] + ([ParamGroup(shared)] if shared else [])

    def infer_params(self, model: LatentVariableModel, x: Tensor, how: PointInference) -> Tensor:
        """lambda (N, P) for the new points x: ``how.steps`` steps of :func:`refine_params` from
        ``how.initial`` or the family's initial value."""
        initial = how.initial
        if initial is None:
            initial = self.family.initial_params(x.shape[0])
        return refine_params(
            model,
            self.family,
            x,
            initial.to(device=x.device, dtype=x.dtype),
            steps=how.steps,
            lr=how.lr,
            batch_size=how.block,
            seed=how.seed,
            first_index=how.first_index,
        )

    def for_params(self, params: Tensor) -> LocalPosterior:
        return LocalPosterior(params.shape[0], self.family, initial=params)

    def extra_repr(self) -> str:
        return f"n_points={self.n_points}, param_size={self.table.shape[1]}"


def infer(
    model: LatentVariableModel,
    posterior: Posterior,
    x: Tensor,
    *,
    steps: int = 500,
    lr: float = 0.1,
    objective: Objective | None = None,
    init_from: nn.Module | None = None,
) -> Posterior:
    """A posterior for the new points x (B, D) with the model fixed, indexed 0..B-1.

    An amortized posterior (plain, semi-amortized or iterative) is returned as it is: inference
    is one forward pass. A per-datapoint posterior gets a fresh table for x, started at the
    prior-like initial value (or at the output ``init_from.params(x)`` of an amortized
    posterior) and optimised for ``steps`` steps (:func:`refine_params`).
    """
    if posterior.amortized and init_from is None:
        return posterior
    family = cast(Family, posterior.family)  # every posterior that infers points has one
    if init_from is None:
        initial = family.initial_params(x.shape[0]).to(device=x.device, dtype=x.dtype)
    else:
        with torch.no_grad(), eval_mode(init_from):
            initial = cast(Callable[[Tensor], Tensor], init_from.params)(x)
    params = refine_params(model, family, x, initial, steps=steps, lr=lr, objective=objective)
    return LocalPosterior(x.shape[0], family, initial=params)
