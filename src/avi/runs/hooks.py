"""The hooks of a run (:class:`avi.inference.loop.Hook`): what ``avi fit`` does around the loop.

In the order a run calls them: the learning rate of the epoch, validation and the collapse
diagnostics (their columns in the epoch's record), early stopping on the validation bound
(keeping the best checkpoint), the run directory's files (metrics.csv, checkpoint.pt,
summary.json, trackers), and the caller's progress and per-epoch callbacks. A Python user
passes their own hooks to :func:`avi.runs.train.run_fit` (custom metrics, logging, stopping).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avi.evaluation.bounds import elbo_per_point
from avi.families.posterior import PointInference
from avi.inference.averaging import averaged
from avi.inference.loop import Diverged, Hook, StepInfo
from avi.inference.state import TrainState
from avi.precision import full_precision
from avi.runs import distributed
from avi.runs.collapse import diagnostics_row
from avi.runs.config import TrainConfig, learning_rate
from avi.runs.load import TrainedRun
from avi.runs.rundir import BEST, CHECKPOINT, METRICS, SUMMARY, MetricsTable, write_checkpoint, write_json

__all__ = [
    "DIAGNOSTIC_POINTS",
    "Callback",
    "EarlyStopping",
    "LearningRate",
    "Progress",
    "RunFiles",
    "Validation",
    "checkpoint_of",
]

#: points of the per-epoch collapse diagnostics: the mutual-information estimate compares every
#: pair in a batch, which for an inverse autoregressive flow costs a pass per latent dimension
DIAGNOSTIC_POINTS = 1000


@dataclass
class LearningRate(Hook):
    """Sets each epoch's learning rate of the dense optimisers (a per-point table keeps its own
    ``local_lr``): :func:`~avi.runs.config.learning_rate` of ``train``, halved once per plateau
    under the plateau schedule, and adds it to the epoch's record as ``lr``.

    Plateau (``train.lr_schedule = "plateau"``, after any warm-up), with P = ``lr_patience``:
    the mean training objective of the last P epochs, A, is compared with that of the P epochs
    before, B; where A <= B + lr_tolerance |B|, a plateau, the rate halves, and the next
    comparison waits P epochs. The ``lr_reductions``-th plateau ends the run, its epoch then
    ``converged``. Means over windows, not the best epoch so far: an epoch's objective is a noisy
    estimate (one sample per point), and a best-so-far rule counts the luckiest epoch as the
    level to beat, which halves the rate while the objective still climbs slowly. The training
    objective, not the validation bound: the question is whether the optimiser has converged,
    and the mean over all training points is the less noisy of the two (overfitting is
    ``train.early_stop``'s). The state follows from the objectives alone: a resumed run replays
    its ``rows`` and continues as if never stopped; resumed with another ``train.lr``, it goes on
    from the same halvings of the new rate."""

    train: TrainConfig
    rows: Sequence[Mapping[str, Any]] = ()
    #: the training objectives of the last 2P epochs after the warm-up
    objectives: list[float] = field(default_factory=list)
    #: epochs since the last plateau (or the warm-up)
    since: int = 0
    reductions: int = 0
    converged: int | None = None

    def __post_init__(self) -> None:
        for row in self.rows:
            self._note(int(row["epoch"]), float(row["train_objective"]))

    def rate(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (1-based) after the plateaus so far."""
        return learning_rate(self.train, epoch) * 0.5**self.reductions

    def on_epoch_start(self, state: TrainState) -> None:
        for opt in state.dense_optimizers:
            for group in opt.param_groups:
                group["lr"] = self.rate(state.epoch + 1)

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        record["lr"] = self.rate(state.epoch)
        return self._note(state.epoch, record["train_objective"])

    def _note(self, epoch: int, objective: float) -> bool:
        """Take in epoch ``epoch``'s training objective; whether the run has converged."""
        train, window = self.train, self.train.lr_patience
        if train.lr_schedule != "plateau" or epoch <= train.lr_warmup:
            return False
        self.objectives = [*self.objectives[1 - 2 * window :], objective]
        self.since += 1
        if self.since < window or len(self.objectives) < 2 * window:
            return False
        before, recent = np.mean(self.objectives[:window]), np.mean(self.objectives[window:])
        if recent > before + train.lr_tolerance * abs(before):
            return False
        self.reductions, self.since = self.reductions + 1, 0
        if self.reductions < train.lr_reductions:
            return False
        self.converged = epoch
        return True


@dataclass
class Validation(Hook):
    """Adds ``val_elbo``, ``val_reconstruction``, ``val_kl`` (each process scoring its shard of
    the validation points, the sums all-reduced) and, on the main process at the epochs that
    ``diagnose(state, record)`` picks (validation's columns in the record; every epoch unless
    told), the collapse diagnostics, all in fp32. A posterior with per-point parameters first
    refines those of the validation points (``inference.validation_steps`` steps, warm-started
    from the last epoch's: ``params``, checkpointed with the run). A non-finite validation ELBO
    is divergence. A run that averages its weights (``state.average``) is validated and
    diagnosed on the averaged weights."""

    run: TrainedRun
    params: Tensor | None = None
    diagnose: Callable[[TrainState, dict[str, Any]], bool] = lambda state, record: True

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        with averaged(state.average), full_precision(self.run.model, self.run.posterior):
            record.update(self._validate())
            if len(self.run.splits.validation) and not math.isfinite(record["val_elbo"]):
                raise Diverged(state.epoch, None, what="the validation ELBO")  # before its q is diagnosed
            if distributed.is_main() and self.diagnose(state, record):  # rank 0 writes them
                record.update(self._diagnostics())
        return False

    def _validate(self) -> dict[str, float]:
        data, run = self.run.splits.validation, self.run
        n = len(data)
        if n == 0:
            return {"val_elbo": math.nan, "val_reconstruction": math.nan, "val_kl": math.nan}
        rows = distributed.shard(n)
        x = data.x[rows.start : rows.stop].to(run.device)
        posterior = run.posterior
        how = PointInference(
            steps=run.config.inference.validation_steps,
            lr=run.config.inference.local_lr,
            initial=None if self.params is None else self.params[rows.start : rows.stop],
        )
        mine = posterior.infer_params(run.model, x, how)
        if mine is not None:
            self.params = distributed.gather_shards(mine, n)
            posterior = posterior.for_params(mine)
        sums = torch.zeros(3, device=run.device)
        if len(rows):
            sums += torch.stack(elbo_per_point(run.model, posterior, x)).sum(dim=1)
        value, reconstruction, kl = (distributed.all_reduce_sum(sums) / n).tolist()
        return {"val_elbo": value, "val_reconstruction": reconstruction, "val_kl": kl}

    def _diagnostics(self) -> dict[str, Any]:
        """On the first 1,000 validation points (on the first 1,000 training points, with a
        fixed binarisation, when there is no validation split)."""
        run, data, posterior = self.run, self.run.splits.validation, self.run.posterior
        if len(data) == 0:
            data = run.splits.train.subset(slice(0, DIAGNOSTIC_POINTS)).binarized(run.config.data.seed + 2)
        elif self.params is not None:
            posterior = posterior.for_params(self.params)
        x = data.x[:DIAGNOSTIC_POINTS].to(run.device)
        return diagnostics_row(run.model, posterior, x, seed=run.config.train.seed)


def checkpoint_of(state: TrainState, rows: list[dict[str, Any]], validation: Validation) -> dict[str, Any]:
    """What checkpoint.pt holds: the training state (with the averaged weights under
    ``averaged`` beside the raw ones, where the run averages them), the metrics so far, the
    validation points' parameters and the global random states (tensors and plain values only)."""
    device = validation.run.device
    return {
        **state.state_dict(),
        "metrics": rows,
        "validation_params": validation.params,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


@dataclass
class EarlyStopping(Hook):
    """Stops when the validation bound has not improved for ``patience`` epochs, and keeps the
    best epoch's checkpoint as ``best.pt`` (main process; with its averaged weights, which
    validation scored, where the run averages them); ``best`` and ``best_epoch`` say where.
    It runs after :class:`RunFiles`, whose ``rows`` then end with the epoch's finished row; a
    resumed run's best so far comes from its earlier rows."""

    patience: int
    run_dir: Path
    validation: Validation
    rows: list[dict[str, Any]]
    best: float = -math.inf
    best_epoch: int = 0

    def __post_init__(self) -> None:
        for row in self.rows:
            self._note(row)

    def _better(self, row: dict[str, Any]) -> bool:
        value = row.get("val_elbo")
        return isinstance(value, float) and math.isfinite(value) and value > self.best

    def _note(self, row: dict[str, Any]) -> bool:
        if not self._better(row):
            return False
        self.best, self.best_epoch = row["val_elbo"], int(row["epoch"])
        return True

    def stops(self, state: TrainState, record: dict[str, Any]) -> bool:
        """Whether :meth:`on_epoch` will stop the run at this epoch, whose record holds its
        validation bound: it is no better than the best, ``patience`` or more epochs after it."""
        return not self._better(record) and state.epoch - self.best_epoch >= self.patience

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        if self._note(record) and distributed.is_main():
            write_checkpoint(self.run_dir / BEST, checkpoint_of(state, self.rows, self.validation))
        return state.epoch - self.best_epoch >= self.patience


#: the first columns of metrics.csv, in this order; other columns follow as the hooks added them
COLUMNS = (
    "epoch", "train_objective", "train_elbo", "train_reconstruction", "train_kl", "val_elbo", "val_reconstruction",
    "val_kl", "epoch_seconds", "examples_per_second", "wall_seconds", "lr", "kl_weight", "aggressive", "encoder_steps",
    "inverse_temperature",
)  # fmt: skip


def metrics_row(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch's record as a row of metrics.csv and the checkpoint: :data:`COLUMNS` first, and
    numpy or 0-d torch scalars (a hook's columns) as Python numbers, which a checkpoint loaded
    with ``weights_only=True`` accepts."""
    ordered = {key: record[key] for key in COLUMNS if key in record} | record
    return {key: _number(value) for key, value in ordered.items()}


def _number(value: Any) -> Any:
    if isinstance(value, np.generic) or (isinstance(value, Tensor) and value.dim() == 0):
        return value.item()
    return value


@dataclass
class RunFiles(Hook):
    """The run directory, written by the main process after every epoch: the record as a row of
    metrics.csv, checkpoint.pt (atomically: a kill loses at most the epoch in progress),
    summary.json ("running"), and the trackers' mirrors. ``rows`` are the run's rows so far (a
    resumed run's included); ``wall_before``, the training seconds before this call."""

    run_dir: Path
    rows: list[dict[str, Any]]
    validation: Validation
    epochs: int
    trackers: list[Any] = field(default_factory=list)
    wall_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.metrics = MetricsTable(self.run_dir / METRICS)
        if self.rows and distributed.is_main():  # a kill between checkpoint and table left it a row short
            self.metrics.write(self.rows)

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        record["wall_seconds"] = self.wall_before + time.perf_counter() - self.started
        self.rows.append(metrics_row(record))
        if distributed.is_main():
            write_checkpoint(self.run_dir / CHECKPOINT, checkpoint_of(state, self.rows, self.validation))
            self.metrics.write(self.rows)
            write_json(self.run_dir / SUMMARY, {"status": "running", "epochs_done": state.epoch, "epochs": self.epochs})
            with averaged(state.average):  # the image grids of the model the run reports
                for tracker in self.trackers:
                    tracker.log(self.rows[-1])
        return False

    def on_end(self, state: TrainState) -> None:
        for tracker in self.trackers:
            tracker.close()


@dataclass
class Progress(Hook):
    """Calls ``update(epoch, examples_done, examples_total, running_sums)`` after every step, on
    the main process (the sums stay on the device: read them sparingly)."""

    update: Callable[[int, int, int, Tensor], None]

    def on_step(self, state: TrainState, info: StepInfo) -> None:
        if distributed.is_main():
            self.update(info.epoch, info.examples, info.total, info.sums)


@dataclass
class Callback(Hook):
    """Calls ``on_epoch(record)`` with each finished epoch's record, on the main process."""

    on_epoch_done: Callable[[dict[str, Any]], None]

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        if distributed.is_main():
            self.on_epoch_done(record)
        return False
