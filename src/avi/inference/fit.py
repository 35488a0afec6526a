"""Fitting a model and its posterior by stochastic optimisation of a bound: :func:`fit`, the
one-call convenience over the loop of :mod:`avi.inference.loop` (the same loop ``avi fit``
trains through), and :func:`compile_step`, the step's forward pass through ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from avi.data.dataset import Dataset
from avi.errors import ConfigError
from avi.families.posterior import Posterior
from avi.inference.averaging import WeightAverage, averaged
from avi.inference.loop import EpochStats, Hook, run, train_epoch
from avi.inference.state import TrainState, make_optimizers
from avi.models.base import LatentVariableModel
from avi.objectives.elbo_objective import ELBO
from avi.objectives.objective import Objective
from avi.objectives.scoring import mean_elbo

__all__ = ["EpochStats", "History", "compile_step", "fit"]


@dataclass
class History(Hook):
    """What :func:`fit` returns: one :class:`EpochStats` per epoch, validation ELBOs (of an
    amortized posterior on ``validation``, after every epoch, with the averaged weights where
    there is an ``average``), and the weight average (``fit(ema_decay=...)``; else None)."""

    train: list[EpochStats] = field(default_factory=list)
    validation_elbo: list[float] = field(default_factory=list)
    validation: Dataset | None = field(default=None, repr=False)
    average: WeightAverage | None = field(default=None, repr=False)

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        if self.validation is not None and state.posterior.amortized:
            with averaged(self.average):
                self.validation_elbo.append(mean_elbo(state.model, state.posterior, self.validation))
        return False


def compile_step(step: nn.Module, data: Dataset) -> nn.Module:
    """``torch.compile(step)`` (the step of :func:`train_epoch`), after one eager analytic-KL
    ELBO of a point of ``data`` through it (no gradients, evaluation mode, random state and
    modes restored): that fills torch.distributions' KL dispatch cache for the pair (q, prior),
    which torch.compile cannot trace and where it would split the step's graph."""
    x, index = data.x[:1], torch.zeros(1, dtype=torch.long, device=data.x.device)
    modes = [(m, m.training) for m in step.modules()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            step.eval()(x, index, ELBO())
    finally:
        for m, training in modes:
            m.training = training
    # a compiled module is an nn.Module (OptimizedModule); torch.compile's stubs say a plain callable
    return cast(nn.Module, torch.compile(step))


def fit(
    model: LatentVariableModel,
    posterior: Posterior,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int = 100,
    objective: Objective | None = None,
    lr: float = 1e-3,
    adam_eps: float = 1e-8,
    local_lr: float = 0.1,
    train_model: bool = True,
    validation: Dataset | None = None,
    generator: torch.Generator | None = None,
    baseline: nn.Module | None = None,
    hooks: Sequence[Hook] = (),
    ema_decay: float | None = None,
) -> History:
    """Fit by ``epochs`` passes of Adam (rate ``lr``, epsilon ``adam_eps``) over minibatches; the
    default objective is the ELBO with one reparameterised sample and analytic KL.
    ``train_model=False`` keeps the model fixed and fits only the posterior (an encoder against
    a known decoder, or per-datapoint VI).
    ``baseline`` is the objective's estimator state (``objective.init_state(data_dim)``),
    passed to each step and updated after it; a learned one (NVIL's network) is trained by Adam
    with the posterior. ``hooks`` (:class:`~avi.inference.loop.Hook`) run each step and epoch
    (custom metrics, logging, early stopping by returning True from ``on_epoch``).

    ``ema_decay`` = d in (0, 1) averages the dense weights over the steps (s <- d_t s + (1 - d_t) p,
    :class:`~avi.inference.averaging.WeightAverage`, as ``avi fit --ema-decay``): validation uses
    the averaged weights, ``hooks`` see the raw ones, and the modules hold the averaged weights
    when fit returns (as Lightning's ``WeightAveraging`` leaves them), the average in
    ``History.average``."""
    if ema_decay is not None and not 0 < ema_decay < 1:
        raise ConfigError(f"ema_decay must be in (0, 1), got {ema_decay}")
    if validation is not None and validation.dynamic:
        raise ConfigError("validation data needs one fixed binarisation: pass validation.binarized(seed)")
    objective = objective or ELBO()
    generator = generator or torch.Generator().manual_seed(0)
    optimizers = make_optimizers(
        model, posterior, lr=lr, local_lr=local_lr, train_model=train_model, eps=adam_eps, estimator=baseline
    )
    state = TrainState(model, posterior, optimizers, generator, baseline)
    history = History(validation=validation)

    def epoch(state: TrainState, data: Dataset, hooks: Sequence[Hook]) -> EpochStats:
        stats = train_epoch(state, data, objective, batch_size=batch_size, hooks=hooks)
        history.train.append(stats)
        return stats

    frozen = [] if train_model else [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # no gradients are computed for a fixed model
        p.requires_grad_(False)
    try:
        if ema_decay is not None:  # after the freeze: a fixed model's weights are not averaged
            history.average = WeightAverage(model, posterior, ema_decay)
        first = [] if history.average is None else [history.average]  # averaged before validation
        run(state, data, epoch, epochs=epochs, hooks=[*first, history, *hooks])
    finally:
        for p in frozen:
            p.requires_grad_(True)
    if history.average is not None:
        history.average.copy_to()
    return history
