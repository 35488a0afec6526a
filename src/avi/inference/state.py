"""The training state: everything a step reads and writes, and everything a checkpoint holds.

In the shape of ``numpyro.infer.svi.SVIState`` and BlackJAX's ``init``/``step`` states: the loop
(:mod:`avi.inference.loop`) takes a state and returns it advanced. What a step draws from
torch's global generators (``rsample``) is the one input outside it: a run's checkpoint
(:func:`avi.runs.hooks.checkpoint_of`) saves their states beside the state's, so a resumed run
continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from avi.errors import RunError, first_line
from avi.families.posterior import Posterior
from avi.models.base import LatentVariableModel

if TYPE_CHECKING:
    from avi.inference.averaging import WeightAverage

__all__ = ["TrainState", "checkpoint_mismatch", "load_weights", "make_optimizers"]


def make_optimizers(
    model: nn.Module,
    posterior: Posterior,
    *,
    lr: float = 1e-3,
    local_lr: float = 0.1,
    train_model: bool = True,
    eps: float = 1e-8,
    estimator: nn.Module | None = None,
) -> list[Optimizer]:
    """Adam for the model, the posterior's dense parameters and a learned control variate
    (``estimator``, NVIL's network: its own Adam, fused kernels where the device has them), and
    SparseAdam for the posterior's per-point table (:meth:`Posterior.param_groups`), so that a
    step touches only the rows of the batch."""
    groups = posterior.param_groups()
    dense = [p for g in groups if not g.table for p in g.params]
    if train_model:
        dense += list(model.parameters())
    optimizers: list[Optimizer] = []
    if dense:
        optimizers.append(torch.optim.Adam(dense, lr=lr, eps=eps, fused=True))
    tables = [p for g in groups if g.table for p in g.params]
    if tables:
        optimizers.append(torch.optim.SparseAdam(tables, lr=local_lr))
    learned = [] if estimator is None else list(estimator.parameters())
    if learned:
        optimizers.append(torch.optim.Adam(learned, lr=lr, eps=eps))
    return optimizers


@dataclass
class TrainState:
    """A fit in progress: the model, the posterior, their optimisers, the objective's estimator
    state (a score-function baseline, or None), the generator that orders batches and draws the
    binarisation, the count of finished epochs and optimiser steps, and the weight average
    (:class:`~avi.inference.averaging.WeightAverage`, or None: ``train.ema_decay``)."""

    model: LatentVariableModel
    posterior: Posterior
    optimizers: list[Optimizer]
    generator: torch.Generator
    estimator: nn.Module | None = None
    epoch: int = 0
    step: int = 0
    average: WeightAverage | None = None

    @property
    def dense_optimizers(self) -> list[Optimizer]:
        """The optimisers a learning-rate schedule drives: all but a per-point table's."""
        return [opt for opt in self.optimizers if not isinstance(opt, torch.optim.SparseAdam)]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (a checkpoint loads with ``weights_only=True``)."""
        return {
            "model": self.model.state_dict(),
            "posterior": self.posterior.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "generator": self.generator.get_state(),
            "baseline": None if self.estimator is None else self.estimator.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "averaged": None if self.average is None else self.average.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], where: str = "checkpoint") -> None:
        """Restore from :meth:`state_dict` (or a checkpoint of an earlier avi); a checkpoint that
        does not fit this state's modules is one :class:`RunError` line naming ``where``."""
        load_weights(self.model, self.posterior, state, where)
        with checkpoint_mismatch(where):
            saved = state["optimizers"]
            if len(saved) != len(self.optimizers):
                raise ValueError(f"it has {len(saved)} optimiser states, the run {len(self.optimizers)}")
            for opt, opt_state in zip(self.optimizers, saved, strict=True):
                opt.load_state_dict(opt_state)
            if self.estimator is not None and state.get("baseline") is not None:  # older runs saved none
                self.estimator.load_state_dict(state["baseline"])
            self.generator.set_state(_byte_tensor(state["generator"]))
            self.epoch = int(state["epoch"])
            self.step = int(state.get("step", 0))
            if self.average is not None:
                if state.get("averaged") is None:
                    raise ValueError("it holds no averaged weights, which the run keeps (train.ema_decay)")
                self.average.load_state_dict(state["averaged"])


@contextmanager
def checkpoint_mismatch(where: str) -> Iterator[None]:
    """A checkpoint's state that does not fit the modules it is loaded into: one
    :class:`RunError` line naming ``where``, instead of torch's multi-line error."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"{where} does not match its config: {first_line(err)}") from None


def load_weights(model: nn.Module, posterior: nn.Module, state: dict[str, Any], where: str = "checkpoint") -> None:
    """Load a checkpoint's model and posterior states (all that evaluation needs)."""
    with checkpoint_mismatch(where):
        model.load_state_dict(state["model"])
        posterior.load_state_dict(state["posterior"])


def _byte_tensor(value: Any) -> Tensor:
    if not isinstance(value, Tensor) or value.dtype != torch.uint8:
        raise TypeError("its generator state is not a byte tensor")
    return value
