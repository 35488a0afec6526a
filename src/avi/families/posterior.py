"""The one posterior interface: q(z | x) as "context -> Distribution", with what the training
loop and evaluation need to know about where its parameters live.

Every strategy is a :class:`Posterior`: amortized (an encoder), per-datapoint (a table of
lambda, one row per training point), semi-amortized and iterative (an encoder refined per
point), and a user's own. The loop and evaluation call these methods and never ask which class
a posterior is (the shape of ``zuko.lazy.LazyDistribution``: a module whose ``forward(context)``
is a distribution, plus a few capabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor, nn
from torch.distributions import Distribution

if TYPE_CHECKING:
    from avi.models.base import LatentVariableModel

__all__ = ["ParamGroup", "PointInference", "Posterior"]


@dataclass(frozen=True)
class ParamGroup:
    """Parameters one optimiser trains. ``table``: the rows of a per-point table, looked up with
    a sparse gradient: SparseAdam at the local learning rate, kept out of DDP, its gradient rows
    shared across processes by the loop. Otherwise dense: Adam, with the model's parameters."""

    params: tuple[nn.Parameter, ...]
    table: bool = False


@dataclass(frozen=True)
class PointInference:
    """How to infer lambda for new points with the model fixed: ``steps`` Adam steps at ``lr``
    (cosine decay), in blocks of ``block`` points whose noise is seeded by (``seed``, the block's
    first point + ``first_index``); ``initial`` (N, P) starts the table (a warm start), else the
    family's initial value."""

    steps: int
    lr: float
    block: int = 10_000
    seed: int | None = None
    first_index: int = 0
    initial: Tensor | None = None


class Posterior(nn.Module):
    """q(z | x_i) for a batch: ``forward(x (B, D), index (B,) or None)`` is a Distribution of
    batch shape (B,). The defaults describe an amortized posterior (an encoder of x)."""

    #: whether q(z | x) is a function of x alone (an encoder), so it applies to new points as it is
    amortized: bool = True

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        raise NotImplementedError

    def param_groups(self) -> list[ParamGroup]:
        """The trainable parameters and how to optimise them (default: all dense)."""
        params = tuple(p for p in self.parameters() if p.requires_grad)
        return [ParamGroup(params)] if params else []

    def infer_params(self, model: LatentVariableModel, x: Tensor, how: PointInference) -> Tensor | None:
        """lambda (N, P) for the new points x with the model fixed, or None where q needs no
        per-point inference (the default: an encoder covers new points)."""
        return None

    def for_params(self, params: Tensor) -> Posterior:
        """The posterior over the points whose lambda :meth:`infer_params` returned (indexed
        0..N-1); only posteriors that infer parameters have one."""
        raise NotImplementedError(f"{type(self).__name__} needs no per-point parameters")
