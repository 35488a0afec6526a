"""Fitting a model and its posterior by stochastic optimisation of a bound, minibatch by minibatch.

The same loop serves every strategy: amortized posteriors (the encoder is trained with the
model, the VAE case, or alone against a fixed model) and per-datapoint posteriors (each
point's parameters are updated when its batch is drawn). It is written for data parallelism:
each process takes its shard of every global batch, and only the caller decides what to write.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from avi.data.dataset import Dataset, batch_sizes, shard_batches
from avi.errors import ConfigError
from avi.evaluation.bounds import mean_elbo
from avi.families.posterior import Posterior
from avi.inference.parallel import data_parallel, sync_table_grad
from avi.models.base import LatentVariableModel
from avi.objectives.select import Objective, make_objective

__all__ = ["EpochStats", "History", "compile_step", "fit", "make_optimizers", "train_epoch"]


@dataclass(frozen=True)
class EpochStats:
    """Means per data point over one epoch of training."""

    objective: float
    elbo: float
    reconstruction: float
    kl: float
    seconds: float
    examples: int


@dataclass
class History:
    """What :func:`fit` returns: one :class:`EpochStats` per epoch, and validation ELBOs."""

    train: list[EpochStats] = field(default_factory=list)
    validation_elbo: list[float] = field(default_factory=list)


def make_optimizers(
    model: nn.Module,
    posterior: Posterior,
    *,
    lr: float = 1e-3,
    local_lr: float = 0.1,
    train_model: bool = True,
    eps: float = 1e-8,
) -> list[Optimizer]:
    """Adam for the model and the posterior's dense parameters (fused kernel where the device has
    one), SparseAdam for its per-point table (:meth:`Posterior.param_groups`), so that a step
    touches only the rows of the batch."""
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
    return optimizers


def train_epoch(
    model: LatentVariableModel,
    posterior: Posterior,
    data: Dataset,
    optimizers: list[Optimizer],
    *,
    objective: Objective,
    batch_size: int,
    generator: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
    on_progress: Callable[[int, Tensor], None] | None = None,
    step: nn.Module | None = None,
) -> EpochStats:
    """One pass over ``data``: for each batch, maximise mean(objective(model, q(x), x)).

    ``generator`` (a CPU generator) orders the batches and, for data on the CPU, draws the
    dynamic binarisation; data on a GPU is binarised from the device's global generator
    (seed it with ``torch.cuda.manual_seed``). Sums of the per-point values stay on the device;
    ``on_progress(examples, sums)`` is called after every step with the running sums
    (objective, reconstruction, kl) and must not force a host synchronisation on every call.

    With ``world_size > 1`` (a process group is initialised) this process takes its shard of
    every global batch and ``step`` (default :func:`~avi.inference.parallel.data_parallel`,
    built once per run by the caller; an objective with a baseline network needs
    ``data_parallel(model, posterior, baseline)``) averages gradients over the ranks, so that the update
    is the single-process update on the global batch; the returned means are over all ranks,
    and ``on_progress`` sees this rank's sums and examples times ``world_size``. Dynamic
    binarisation then draws from a per-rank generator seeded from the state of ``generator``
    (which is not advanced, so that the ranks' permutations stay those of a single process).
    In a single process a given ``step`` computes the terms in place of
    ``objective(model, posterior(x, index), x)``: :func:`compile_step` of a
    :class:`~avi.inference.parallel.ShardStep`, say.
    """
    start = time.perf_counter()
    device = data.x.device
    sums = torch.zeros(3, device=device)
    examples = 0
    parallel = world_size > 1
    noise = generator
    tables: list[nn.Parameter] = []
    if parallel:
        step = step if step is not None else data_parallel(model, posterior)
        tables = [p for g in posterior.param_groups() if g.table for p in g.params]
        noise = torch.Generator().manual_seed(_seed_of(generator) + rank)
    batches = shard_batches(len(data), batch_size, generator, rank=rank, world_size=world_size)
    for batch, index in zip(batch_sizes(len(data), batch_size, world_size), batches):
        index = index.to(device)
        x = data.batch(index, noise if device.type == "cpu" else None)
        if parallel:
            terms = step(x, index, objective)
            loss = terms.value.sum() * (-world_size / batch)  # DDP's mean over ranks: the global mean
        else:
            terms = step(x, index, objective) if step is not None else objective(model, posterior(x, index), x)
            loss = -terms.value.mean()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for table in tables:  # empty in a single process
            sync_table_grad(table, index, rank=rank, world_size=world_size, batch=batch)
        for opt in optimizers:
            opt.step()
        with torch.no_grad():  # metrics: no autograd graph, no host synchronisation
            sums += torch.stack([terms.value.sum(), terms.reconstruction.sum(), terms.kl.sum()])
        examples += index.numel()
        if on_progress is not None:
            on_progress(examples * world_size, sums * world_size if parallel else sums)
    if parallel:
        dist.all_reduce(sums)
        examples = len(data)
    value, reconstruction, kl = (sums / max(examples, 1)).tolist()
    return EpochStats(value, reconstruction - kl, reconstruction, kl, time.perf_counter() - start, examples)


def compile_step(step: nn.Module, data: Dataset) -> nn.Module:
    """``torch.compile(step)`` (the step of :func:`train_epoch`), after one eager analytic-KL
    ELBO of a point of ``data`` through it (no gradients, evaluation mode, random state and
    modes restored): that fills torch.distributions' KL dispatch cache for the pair (q, prior),
    which torch.compile cannot trace and where it would split the step's graph."""
    x, index = data.x[:1], torch.zeros(1, dtype=torch.long, device=data.x.device)
    modes = [(m, m.training) for m in step.modules()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            step.eval()(x, index, make_objective("elbo"))
    finally:
        for m, training in modes:
            m.training = training
    return torch.compile(step)


def _seed_of(generator: torch.Generator) -> int:
    """A seed that changes with the state of ``generator``, without drawing from it."""
    return int.from_bytes(hashlib.sha256(generator.get_state().numpy().tobytes()).digest()[:7], "little")


def fit(
    model: LatentVariableModel,
    posterior: Posterior,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int = 100,
    objective: Objective | None = None,
    lr: float = 1e-3,
    local_lr: float = 0.1,
    train_model: bool = True,
    validation: Dataset | None = None,
    generator: torch.Generator | None = None,
    baseline: nn.Module | None = None,
) -> History:
    """Fit by ``epochs`` passes of Adam over minibatches; the default objective is the ELBO with
    one reparameterised sample and analytic KL. ``train_model=False`` keeps the model fixed and
    fits only the posterior (an encoder against a known decoder, or per-datapoint VI).
    ``baseline`` is the objective's learned baseline network (the NVILBaseline passed to
    ``make_objective(..., estimator="nvil", baseline=...)``), trained by Adam with the posterior."""
    if validation is not None and validation.dynamic:
        raise ConfigError("validation data needs one fixed binarisation: pass validation.binarized(seed)")
    objective = objective or make_objective("elbo")
    generator = generator or torch.Generator().manual_seed(0)
    optimizers = make_optimizers(model, posterior, lr=lr, local_lr=local_lr, train_model=train_model)
    if baseline is not None and list(baseline.parameters()):
        optimizers.append(torch.optim.Adam(baseline.parameters(), lr=lr))
    history = History()
    frozen = [] if train_model else [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # no gradients are computed for a fixed model
        p.requires_grad_(False)
    try:
        for _ in range(epochs):
            history.train.append(
                train_epoch(
                    model, posterior, data, optimizers, objective=objective, batch_size=batch_size, generator=generator
                )
            )
            if validation is not None and posterior.amortized:
                history.validation_elbo.append(mean_elbo(model, posterior, validation))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return history
