"""Aggressive inference-network training (He, Spokoyny, Neubig and Berg-Kirkpatrick 2019,
"Lagging Inference Networks and Posterior Collapse in Variational Autoencoders", Algorithm 1).

Early in training the encoder lags behind the true posterior and the decoder learns to ignore
z. Aggressive training lets the encoder catch up before every decoder update: for each batch,
encoder-only steps on random batches until the encoder's objective stops improving, then one
decoder-only step on the batch. The caller runs such epochs while the mutual information
I(x; z) still rises (see :func:`avi.evaluation.mutual_information`), then returns to joint
updates (:func:`avi.inference.train_epoch`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from avi.data.dataset import Dataset, shard_batches
from avi.inference.loop import EpochStats
from avi.models.base import LatentVariableModel
from avi.objectives.batch import local_mean
from avi.objectives.select import Objective

__all__ = ["AggressiveStats", "aggressive_epoch"]


class AggressiveStats(NamedTuple):
    """An aggressive epoch's statistics (over its decoder steps) and its encoder steps in all."""

    epoch: EpochStats
    encoder_steps: int


def _step(
    model: LatentVariableModel,
    posterior: nn.Module,
    x: Tensor,
    index: Tensor,
    optimizers: list[Optimizer],
    objective: Objective,
    params: list[nn.Parameter],
    state: nn.Module | None,
) -> Tensor:
    """One step of the optimisers on the gradient of -mean(objective) w.r.t. ``params`` only
    (the other parameters get no gradient, so Adam leaves them and their moments untouched).
    The objective's ``state`` is updated after the step. Returns the per-point terms, detached, stacked (3, B)."""
    terms = objective(model, posterior(x, index), x, state=state)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    (-terms.value.mean()).backward(inputs=params)
    for opt in optimizers:
        opt.step()
    if state is not None:
        objective.update_state(state, terms, local_mean)
    return torch.stack([terms.value, terms.reconstruction, terms.kl]).detach()


def aggressive_epoch(
    model: LatentVariableModel,
    posterior: nn.Module,
    data: Dataset,
    optimizers: list[Optimizer],
    *,
    objective: Objective,
    batch_size: int,
    generator: torch.Generator,
    max_encoder_steps: int = 100,
    check_every: int = 10,
    baseline: nn.Module | None = None,
    on_progress: Callable[[int, Tensor], None] | None = None,
) -> AggressiveStats:
    """One epoch of aggressive training. For each batch x of the epoch:

    1. encoder (``posterior``) steps, the first on x, the others on random batches drawn without
       replacement, until the mean loss over the last ``check_every`` steps is above that of the
       ``check_every`` before, or ``max_encoder_steps - 1`` steps are done (He et al.'s image
       code: windows of 10, fewer than 100 steps);
    2. one decoder (``model``) step on x.

    ``optimizers`` must hold the parameters of both (e.g. :func:`~avi.inference.make_optimizers`);
    each step computes gradients for one side only. ``baseline`` is the objective's estimator
    state (``objective.init_state``), passed to every step and updated after it; a network
    (NVIL's) belongs to the inference side: it steps with the encoder (its optimiser must be in
    ``optimizers`` too). The statistics (objective, ELBO terms) are those of the decoder steps;
    ``on_progress`` is called as in :func:`~avi.inference.train_epoch`. Single process: the
    inner loop's random batches are not sharded over ranks (the runner refuses torchrun).
    """
    start = time.perf_counter()
    device = data.x.device
    inference = [posterior] if baseline is None else [posterior, baseline]
    encoder_params = [p for module in inference for p in module.parameters() if p.requires_grad]
    decoder_params = [p for p in model.parameters() if p.requires_grad]
    sample = generator if device.type == "cpu" else None
    sums = torch.zeros(3, device=device)
    examples = encoder_steps = 0

    def encoder_step(x: Tensor, index: Tensor) -> Tensor:
        return _step(model, posterior, x, index, optimizers, objective, encoder_params, baseline)

    for index in shard_batches(len(data), batch_size, generator):
        index = index.to(device)
        x = data.batch(index, sample)
        encoder_steps += _train_encoder(
            encoder_step, data, x, index, generator, batch_size, max_encoder_steps, check_every
        )
        terms = _step(model, posterior, x, index, optimizers, objective, decoder_params, baseline)
        sums += terms.sum(1)
        examples += index.numel()
        if on_progress is not None:
            on_progress(examples, sums)
    value, reconstruction, kl = (sums / max(examples, 1)).tolist()
    stats = EpochStats(value, reconstruction - kl, reconstruction, kl, time.perf_counter() - start, examples)
    return AggressiveStats(stats, encoder_steps)


def _train_encoder(
    step: Callable[[Tensor, Tensor], Tensor],
    data: Dataset,
    x: Tensor,
    index: Tensor,
    generator: torch.Generator,
    batch_size: int,
    max_steps: int,
    check_every: int,
) -> int:
    """Encoder steps, the first on (x, index), the others on random batches, until the mean loss
    of the last ``check_every`` steps is above that of the ``check_every`` before, or
    ``max_steps - 1`` steps are done; returns how many were taken."""
    device, sample = x.device, generator if x.device.type == "cpu" else None
    window, previous = torch.zeros((), device=device), math.inf
    taken = 0
    for n in range(1, max_steps):
        window += -step(x, index)[0].mean()
        taken += 1
        if n % check_every == 0:
            current = window.item() / check_every  # one host read per window
            if current > previous:
                break
            window, previous = torch.zeros((), device=device), current
        index = torch.randperm(len(data), generator=generator)[:batch_size].to(device)
        x = data.batch(index, sample)
    return taken
