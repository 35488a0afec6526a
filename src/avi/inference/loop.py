"""The one training loop: a step, an epoch of steps, and a run of epochs with hooks.

``train_step`` maximises mean(objective(model, q(x), x)) on one batch and advances the
:class:`~avi.inference.state.TrainState`; ``train_epoch`` runs it over a shuffled pass of the
data (each process its shard of every global batch under data parallelism); ``run`` repeats an
epoch function and calls the hooks, which is where validation, diagnostics, metrics,
checkpoints, trackers and early stopping live (:mod:`avi.runs.hooks`). ``avi.inference.fit``,
``avi fit``, aggressive training and the benchmarks all train through it.

A non-finite objective is caught: the epoch raises :class:`Diverged` naming the epoch and the
first non-finite step, before any hook could save the non-finite weights; so does a parameter
left non-finite by an epoch's last update. Each step's objective
stays on the device (one copy per step, no host synchronisation) and is checked once per epoch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from avi.data.dataset import Dataset, batch_sizes, shard_batches
from avi.errors import ConfigError, RunError
from avi.inference.parallel import global_mean, sync_table_grad
from avi.inference.state import TrainState
from avi.objectives.batch import local_mean
from avi.objectives.bounds import Terms
from avi.objectives.objective import Objective

__all__ = ["Diverged", "EpochFn", "EpochStats", "Hook", "Replicas", "StepInfo", "run", "train_epoch", "train_step"]


class Diverged(RunError):
    """The objective or, after an epoch's last step, a parameter became NaN or infinite:
    ``epoch`` and ``step`` (1-based within the epoch; None where only the epoch's mean or its
    parameters were checked) name where."""

    def __init__(self, epoch: int, step: int | None, *, what: str = "the objective") -> None:
        where = f"epoch {epoch}" + ("" if step is None else f", step {step}")
        super().__init__(
            f"training diverged: {what} is not finite at {where} "
            "(lower the learning rate, or check the data and the model)"
        )
        self.epoch, self.step = epoch, step


@dataclass(frozen=True)
class EpochStats:
    """Means per data point over one epoch of training."""

    objective: float
    elbo: float
    reconstruction: float
    kl: float
    seconds: float
    examples: int


@dataclass(frozen=True)
class StepInfo:
    """After a step of epoch ``epoch``: ``examples`` of ``total`` points done, and the running
    sums (objective, reconstruction, kl) over them, on the device (read them sparingly)."""

    epoch: int
    examples: int
    total: int
    sums: Tensor


class Hook:
    """Called by :func:`run`. ``on_epoch`` gets the epoch's record (a dict every hook may add
    columns to, in order) and returns True to stop training after this epoch."""

    def on_epoch_start(self, state: TrainState) -> None:
        return None

    def on_step(self, state: TrainState, info: StepInfo) -> None:
        return None

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        return False

    def on_end(self, state: TrainState) -> None:
        return None


@dataclass(frozen=True)
class Replicas:
    """How this process shares the steps: ``world_size`` processes, this one ``rank``;
    ``step``, the forward pass as a module (:class:`~avi.inference.parallel.ShardStep` wrapped in
    DDP, or compiled), computes the terms in place of ``objective(model, q, x)``."""

    rank: int = 0
    world_size: int = 1
    step: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.world_size > 1 and self.step is None:
            raise ConfigError("data-parallel training needs its step: pass step=data_parallel(model, posterior, state)")

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


#: one epoch of training: (state, data, hooks) -> stats, calling the hooks' ``on_step``;
#: advances ``state.step``, not ``state.epoch``
EpochFn = Callable[[TrainState, Dataset, Sequence[Hook]], EpochStats]

SINGLE = Replicas()


@dataclass
class _Running:
    """An epoch's sums on the device, and each step's objective sum (``values``: a non-finite
    one names the step where training diverged; written by one copy per step, read at the end)."""

    sums: Tensor
    values: Tensor
    examples: int = 0
    steps: int = 0
    hooks: Sequence[Hook] = field(default_factory=tuple)


def train_step(
    state: TrainState, x: Tensor, index: Tensor, objective: Objective, *, batch: int, replicas: Replicas = SINGLE
) -> Terms:
    """One optimiser step on the batch x (this process's shard of a global batch of ``batch``
    points, with data-point indices ``index``): the loss is -(1/batch) sum_i value_i (scaled by
    the world size under DDP, whose gradient average then gives the global batch's gradient);
    a per-point table's gradient rows are shared across processes; then the estimator state is
    updated from the step's terms (over the global batch). Returns the step's terms."""
    if replicas.step is not None:
        terms = replicas.step(x, index, objective)
    else:
        terms = objective(state.model, state.posterior(x, index), x, state=state.estimator)
    if replicas.parallel:
        loss = terms.value.sum() * (-replicas.world_size / batch)  # DDP's mean over ranks: the global mean
    else:
        loss = -terms.value.mean()
    for opt in state.optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if replicas.parallel:
        for group in state.posterior.param_groups():
            for table in group.params if group.table else ():
                sync_table_grad(table, index, rank=replicas.rank, world_size=replicas.world_size, batch=batch)
    for opt in state.optimizers:
        opt.step()
    if state.estimator is not None:
        objective.update_state(state.estimator, terms, global_mean if replicas.parallel else local_mean)
    state.step += 1
    return terms


def train_epoch(
    state: TrainState,
    data: Dataset,
    objective: Objective,
    *,
    batch_size: int,
    replicas: Replicas = SINGLE,
    hooks: Sequence[Hook] = (),
) -> EpochStats:
    """One pass over ``data`` in batches of ``batch_size`` (global), a :func:`train_step` each.

    ``state.generator`` (a CPU generator) orders the batches and, for data on the CPU, draws the
    dynamic binarisation; data on a GPU is binarised from the device's global generator. Under
    data parallelism this process takes its shard of every global batch; its binarisation draws
    from a per-rank generator seeded from the state of ``state.generator`` (which is not advanced
    by it, so that the ranks' permutations stay those of one process), and the returned means are
    over all ranks. Hooks' ``on_step`` see the running sums and examples of all ranks (this
    rank's times the world size). Raises :class:`Diverged` after a non-finite step."""
    start = time.perf_counter()
    device = data.x.device
    noise = state.generator
    if replicas.parallel:
        noise = torch.Generator().manual_seed(_seed_of(state.generator) + replicas.rank)
    world = replicas.world_size
    sizes = batch_sizes(len(data), batch_size, world)
    running = _Running(torch.zeros(3, device=device), torch.zeros(len(sizes), device=device), hooks=hooks)
    batches = shard_batches(len(data), batch_size, state.generator, rank=replicas.rank, world_size=world)
    for batch, index in zip(sizes, batches, strict=True):
        index = index.to(device)
        x = data.batch(index, noise if device.type == "cpu" else None)
        terms = train_step(state, x, index, objective, batch=batch, replicas=replicas)
        _account(state, running, terms, index.numel(), world, len(data))
    first_bad = _first_non_finite(running.values)
    if replicas.parallel:
        dist.all_reduce(running.sums)
        first_bad = _earliest(first_bad)
        running.examples = len(data)
    _check_finite(first_bad, state.epoch + 1)
    value, reconstruction, kl = (running.sums / max(running.examples, 1)).tolist()
    return EpochStats(value, reconstruction - kl, reconstruction, kl, time.perf_counter() - start, running.examples)


def _account(state: TrainState, running: _Running, terms: Terms, examples: int, world: int, total: int) -> None:
    """Add a step's terms (of ``examples`` points on this rank) to the running sums (no autograd
    graph, no host synchronisation) and note it if it is the first non-finite one; tell the hooks
    what all ``world`` ranks have done (this rank's sums and examples times ``world``)."""
    with torch.no_grad():
        step_sums = torch.stack([terms.value.sum(), terms.reconstruction.sum(), terms.kl.sum()])
        running.sums += step_sums
        running.values[running.steps] = step_sums[0]
    running.steps += 1
    running.examples += examples
    if running.hooks:
        sums = running.sums * world if world > 1 else running.sums
        info = StepInfo(state.epoch + 1, running.examples * world, total, sums)
        for hook in running.hooks:
            hook.on_step(state, info)


def _first_non_finite(values: Tensor) -> Tensor:
    """The 1-based index of the first non-finite entry of ``values`` (-1: none), on the device."""
    bad = ~torch.isfinite(values)
    first = torch.argmax(bad.to(torch.int8)) + 1  # argmax: the first maximum
    return torch.where(bad.any(), first, -1).to(torch.int64)


def _earliest(first_bad: Tensor) -> Tensor:
    """The earliest non-finite step over the ranks (-1: none on any)."""
    never = torch.iinfo(torch.int64).max
    steps = torch.where(first_bad < 0, never, first_bad).to(torch.int64)
    dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    return torch.where(steps == never, -1, steps)


def _check_finite(first_bad: Tensor, epoch: int) -> None:
    step = int(first_bad.item())
    if step >= 0:
        raise Diverged(epoch, step)


def _check_parameters(state: TrainState) -> None:
    """Raise :class:`Diverged` when the epoch's last step left a parameter non-finite (its
    objective, computed before that update, was finite): no hook sees or saves such weights.
    Every process holds the same parameters, so all raise together."""
    params = [p.detach() for module in (state.model, state.posterior) for p in module.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise Diverged(state.epoch + 1, None, what="a parameter")


def _seed_of(generator: torch.Generator) -> int:
    """A seed that changes with the state of ``generator``, without drawing from it."""
    return int.from_bytes(hashlib.sha256(generator.get_state().numpy().tobytes()).digest()[:7], "little")


def run(state: TrainState, data: Dataset, train: EpochFn, *, epochs: int, hooks: Sequence[Hook] = ()) -> TrainState:
    """Train epoch after epoch until ``state.epoch`` reaches ``epochs`` or a hook stops it.

    Each epoch: every hook's ``on_epoch_start``, then ``train(state, data, hooks)`` (an epoch function:
    :func:`train_epoch` with its objective and batch size bound, or another, such as aggressive
    training), then ``state.epoch`` advances and every hook's ``on_epoch`` sees the epoch's
    record, in order (validation before the metrics table before the checkpoint). At the end,
    also when an epoch raises (:class:`Diverged`, an interrupt), every hook's ``on_end``."""
    try:
        while state.epoch < epochs:
            for hook in hooks:
                hook.on_epoch_start(state)
            stats = train(state, data, hooks)
            _check_parameters(state)
            state.epoch += 1
            record: dict[str, Any] = {"epoch": state.epoch, **_stats_columns(stats)}
            stop = [hook.on_epoch(state, record) for hook in hooks]
            if any(stop):
                break
    finally:
        for hook in hooks:
            hook.on_end(state)
    return state


def _stats_columns(stats: EpochStats) -> dict[str, float]:
    return {
        "train_objective": stats.objective,
        "train_elbo": stats.elbo,
        "train_reconstruction": stats.reconstruction,
        "train_kl": stats.kl,
        "epoch_seconds": stats.seconds,
        "examples_per_second": stats.examples / stats.seconds if stats.seconds > 0 else float("nan"),
    }
