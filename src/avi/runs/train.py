"""``avi fit``: train from a config into a run directory, with checkpoints, resume and hooks.

:func:`run_fit` is the one way a run is trained, from the command line or from Python: it builds
the run's objects (:mod:`avi.runs.load`), restores or starts a :class:`TrainState`, and hands
them to the loop (:func:`avi.inference.loop.run`) with the run's hooks (:mod:`avi.runs.hooks`)
and the caller's own.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor

from avi.data.dataset import Dataset
from avi.errors import ConfigError, RunError, first_line
from avi.inference.aggressive import aggressive_epoch
from avi.inference.averaging import WeightAverage
from avi.inference.fit import compile_step
from avi.inference.loop import Diverged, EpochStats, Hook, Replicas, StepInfo, run, train_epoch
from avi.inference.parallel import ShardStep, data_parallel
from avi.inference.state import TrainState, make_optimizers
from avi.interrupts import interrupts_held
from avi.precision import resolve_precision, set_precision
from avi.runs import distributed
from avi.runs.build import build_objective
from avi.runs.collapse import aggressive_next, plot_collapse
from avi.runs.config import Config, TrainConfig, epoch_inverse_temperature, epoch_kl_weight
from avi.runs.hooks import Callback, EarlyStopping, LearningRate, Progress, RunFiles, Validation
from avi.runs.load import (
    TrainedRun,
    available_device,
    build_run,
    default_run_dir,
    infer_posterior,
    load_trained,
    resolve_device,
)
from avi.runs.memory import TRAINING_SIZES, settings_of, sized_by
from avi.runs.paths import check_output_dir
from avi.runs.rundir import (
    CHECKPOINT,
    CONFIG,
    SUMMARY,
    SUMMARY_SCHEMA,
    read_checkpoint,
    read_config,
    read_json,
    require_new_run,
    require_run,
    run_lock,
    write_json,
)
from avi.runs.tracking import open_trackers

__all__ = [
    "ProgressHook",
    "WORSENED",
    "TrainedRun",
    "available_device",
    "default_run_dir",
    "infer_posterior",
    "load_trained",
    "resolve_device",
    "run_fit",
    "stopped_early",
    "train_objective_worsened",
    "val_elbo_improving",
]

#: called as hook(epoch, examples_done, examples_total, running_objective_sums) on the main rank
ProgressHook = Callable[[int, int, int, Tensor], None]


def run_fit(
    config: Config | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    epochs: int | None = None,
    compile: bool | None = None,
    lr: float | None = None,
    lr_schedule: str | None = None,
    diagnostics_every: int | None = None,
    progress: ProgressHook | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    hooks: Sequence[Hook] = (),
) -> Path:
    """Train as ``config`` says into ``run_dir``, checkpointing after every epoch.

    With ``resume=True`` the config is read from ``run_dir`` and training continues after the
    last checkpointed epoch (from epoch 0 where a fit was stopped before its first checkpoint).
    ``epochs`` stops training after that many epochs in all, instead of ``config.train.epochs``
    (a run can be extended, or trained in parts; fewer than a resumed run has done is an error,
    and without it a run extended earlier stays so); an extension past ``train.epochs`` is
    recorded there, so a cosine schedule re-spans to the new end (its rate at the next epoch is
    the new span's) instead of rising again past its old one; ``compile`` sets ``config.train.compile``
    for this call (a resumed run may train compiled or not; Inductor draws its own noise, so the
    two do not follow the same path sample for sample). ``lr`` gives a resumed run a new
    ``train.lr``, recorded in its config.json: the schedule goes on from its epoch (and its
    plateaus) at the new rate; each epoch's rate is the ``lr`` column of metrics.csv.
    ``lr_schedule`` gives it a new ``train.lr_schedule``, recorded the same way: the new
    schedule's rate of each epoch from the next on; a switch to "plateau" replays the run's
    training objectives so far, so plateaus already in them count (as on any resume).
    ``diagnostics_every`` gives it a new ``train.diagnostics_every``, recorded the same way.

    ``hooks`` (:class:`~avi.inference.loop.Hook`) run every step and epoch, after validation and
    before the run's files are written: columns a hook adds to the epoch's record land in
    metrics.csv (custom metrics), and ``on_epoch`` returning True stops the run after that epoch
    (early stopping of your own). ``train.early_stop`` = P stops after P epochs without a better
    validation bound and keeps that epoch's checkpoint as best.pt. Returns the run directory.

    The main process holds the run directory's lock (:func:`~avi.runs.rundir.run_lock`) for the
    whole fit, taken before it writes anything there: a second fit into the same directory, new
    or resumed, fails with a :class:`~avi.errors.RunError` instead of overwriting it. A
    non-finite objective stops the fit with :class:`~avi.inference.loop.Diverged` (one line
    naming the epoch and step); the last finite checkpoint stays and summary.json says
    ``"status": "diverged"``. A KeyboardInterrupt (Ctrl-C) stops it between two operations: the
    finished epochs' files stay, summary.json says ``"status": "interrupted"`` with the epochs
    saved, and the interrupt propagates. A resumed run that its stopping rule ended (early
    stopping, or the plateau schedule's convergence: :func:`stopped_early`) trains on only
    with a new ``lr`` or ``lr_schedule``; otherwise it is returned as it is (and a new
    ``diagnostics_every`` alone, which would go unused, is a ConfigError).
    """
    given = (("lr", lr), ("lr_schedule", lr_schedule), ("diagnostics_every", diagnostics_every))
    changes = {key: value for key, value in given if value is not None}
    if resume and lr is None and lr_schedule is None and run_dir is not None and stopped_early(run_dir):
        if diagnostics_every is not None:  # it would train nothing, so the new value would go unused
            raise ConfigError(
                f"{run_dir} was ended by its stopping rule and trains on only with a new train.lr or "
                "train.lr_schedule (--lr, --lr-schedule): a new train.diagnostics_every alone changes nothing"
            )
        return Path(run_dir)  # its stopping rule would end it again after an epoch
    with ExitStack() as held:
        fit = _start(held, config, run_dir, resume=resume, epochs=epochs, compile=compile, changes=changes)
        edge: list[Hook] = [Progress(progress)] if progress is not None else []
        edge += [Callback(on_epoch)] if on_epoch is not None else []
        return fit.train(hooks, edge)


@dataclass
class _Fit:
    """A fit about to run: its objects, state, hooks' state, and the epochs to reach."""

    run_dir: Path
    run: TrainedRun
    state: TrainState
    train_data: Dataset
    replicas: Replicas
    validation: Validation
    rows: list[dict[str, Any]]
    last_epoch: int
    precision: str
    #: the columns of the epoch in progress that the run adds to its record
    columns: dict[str, Any] = field(default_factory=dict)
    #: epochs whose checkpoint is written: what a resume continues from
    saved: int = 0

    @property
    def config(self) -> Config:
        return self.run.config

    def train(self, hooks: Sequence[Hook], edge: Sequence[Hook]) -> Path:
        """Run the loop with, in order: the weight average (``train.ema_decay``), the learning
        rate, the run's columns, validation, the caller's ``hooks``, the run's files, early
        stopping, and the command line's ``edge``."""
        main = distributed.is_main()
        schedule = LearningRate(self.config.train, self.rows)  # a resumed run's plateaus from its rows
        stopping = None
        if self.config.train.early_stop is not None:
            stopping = EarlyStopping(self.config.train.early_stop, self.run_dir, self.validation, self.rows)
        self.validation.diagnose = partial(self._diagnosed, schedule=schedule, stopping=stopping)
        order: list[Hook] = [self.state.average] if self.state.average is not None else []
        order += [schedule, _EpochColumns(self), self.validation, *hooks]
        trackers = open_trackers(self.config, self.run_dir, self.rows, self.run) if main else []
        order += trackers  # their step-level records (TensorBoard's step scalars)
        wall = self.rows[-1].get("wall_seconds", 0.0) if self.rows else 0.0
        order.append(_Saved(RunFiles(self.run_dir, self.rows, self.validation, self.last_epoch, trackers, wall), self))
        order += [stopping] if stopping is not None else []  # after the run files: the row is complete
        try:
            with sized_by(settings_of(self.config, TRAINING_SIZES)):
                run(self.state, self.train_data, self._epoch, epochs=self.last_epoch, hooks=[*order, *edge])
        except Diverged as err:
            if main:
                write_json(
                    self.run_dir / SUMMARY, self._summary("diverged", diverged={"epoch": err.epoch, "step": err.step})
                )
            raise
        except KeyboardInterrupt:
            if main:
                write_json(self.run_dir / SUMMARY, self._summary("interrupted"))
            raise
        if main:
            if any("kl_dim_0" in row for row in self.rows):
                plot_collapse(self.run_dir)
            best: dict[str, Any] = {}
            if stopping is not None:
                best |= {"best_epoch": stopping.best_epoch, "best_val_elbo": stopping.best}
            if self.config.train.lr_schedule == "plateau":  # whether the plateaus ended it, and when
                best |= {"converged": schedule.converged is not None, "converged_epoch": schedule.converged}
            write_json(self.run_dir / SUMMARY, self._summary("finished", **best))
        return self.run_dir

    def _diagnosed(
        self, state: TrainState, record: dict[str, Any], *, schedule: LearningRate, stopping: EarlyStopping | None
    ) -> bool:
        """Whether the epoch records the collapse diagnostics: every ``train.diagnostics_every``-th
        (none where 0), every aggressive one (whose rule reads its mutual information), and the
        run's last, as far as it is known at validation: the last of its epochs, or one where the
        plateau schedule converged or early stopping will stop it."""
        every, epoch = self.config.train.diagnostics_every, state.epoch
        if (every and epoch % every == 0) or epoch >= self.last_epoch or record.get("aggressive"):
            return True
        return schedule.converged == epoch or (stopping is not None and stopping.stops(state, record))

    def _epoch(self, state: TrainState, data: Dataset, hooks: Sequence[Hook]) -> EpochStats:
        """One epoch of the run: the objective of this epoch (its KL weight), aggressive encoder
        training while the remedy says so, else the plain loop."""
        epoch = state.epoch + 1
        objective = build_objective(self.config, self.run.posterior, epoch=epoch)
        self.columns = {"kl_weight": epoch_kl_weight(self.config, epoch), "aggressive": 0, "encoder_steps": 0}
        if self.config.remedies.temper > 0:
            self.columns["inverse_temperature"] = epoch_inverse_temperature(self.config, epoch)
        if not aggressive_next(self.config, self.rows):
            batch = self.config.train.batch_size
            return train_epoch(state, data, objective, batch_size=batch, replicas=self.replicas, hooks=hooks)

        def progress(done: int, sums: Tensor) -> None:
            for hook in hooks:
                hook.on_step(state, StepInfo(epoch, done, len(data), sums))

        result = aggressive_epoch(
            state.model, state.posterior, data, state.optimizers, objective=objective,
            batch_size=self.config.train.batch_size, generator=state.generator, baseline=state.estimator,
            on_progress=progress,
        )  # fmt: skip
        self.columns.update(aggressive=1, encoder_steps=result.encoder_steps)
        state.step += len(range(0, len(data), self.config.train.batch_size))
        if not math.isfinite(result.epoch.objective):  # checked once, on the epoch's mean
            raise Diverged(epoch, None)
        return result.epoch

    def _summary(self, status: str, **extra: Any) -> dict[str, Any]:
        """summary.json: ``status`` and the numbers of the last saved epoch (an interrupt may come
        after an epoch's row is made and before its files are written: that row does not count)."""
        final = self.rows[self.saved - 1] if self.saved else {}
        return {
            "status": status,
            "epochs_done": self.saved,
            "epochs": self.last_epoch,
            "train_elbo": final.get("train_elbo"),
            "val_elbo": final.get("val_elbo"),
            "wall_seconds": final.get("wall_seconds", 0.0),
            "precision": self.precision,
            "parameters": sum(p.numel() for p in self.run.model.parameters())
            + sum(p.numel() for p in self.run.posterior.parameters()),
            "val_elbo_improving": val_elbo_improving(self.rows[: self.saved], self.config.train),
            "train_objective_worsened": train_objective_worsened(self.rows[: self.saved], self.config.train),
            **extra,
        }


#: the fewest last epochs whose validation bound :func:`val_elbo_improving` compares with the earlier ones
IMPROVING_WINDOW = 5


def val_elbo_improving(rows: Sequence[dict[str, Any]], train: TrainConfig) -> bool | None:
    """Whether the validation bound was still improving at the end of the epochs ``rows``: the
    best ``val_elbo`` of the last W epochs exceeds the best of the epochs before them, B, by
    more than ``train.lr_tolerance`` x |B|. W is ``train.early_stop`` where set (so that a run
    early stopping ended was not improving, and one it would not have stopped yet was), else
    10% of the epochs and at least :data:`IMPROVING_WINDOW`; at most all epochs but the first.
    None where there is nothing to compare: no validation split (NaN bounds) or under 2 epochs."""
    values = [float(v) for row in rows if isinstance(v := row.get("val_elbo"), (int, float)) and math.isfinite(v)]
    if len(values) < 2:
        return None
    window = train.early_stop or max(IMPROVING_WINDOW, math.ceil(len(values) / 10))
    window = min(window, len(values) - 1)
    before = max(values[:-window])
    return max(values[-window:]) > before + train.lr_tolerance * abs(before)


#: what ``avi fit`` and ``avi report`` say where :func:`train_objective_worsened`
WORSENED = (
    "the training objective got worse over the run (its mean over the last epochs is below an earlier one's): "
    "the learning rate (train.lr) may be too high; see metrics.csv"
)


def train_objective_worsened(rows: Sequence[dict[str, Any]], train: TrainConfig) -> bool | None:
    """Whether the training objective got worse during the run, the mark of a learning rate too
    high for it: the mean ``train_objective`` of the last W epochs falls
    below the best mean of the earlier windows of W (consecutive, counted back from the end) by
    more than three standard errors of the difference (each window's from its epochs' spread)
    and ``train.lr_tolerance`` x |best|. Only the trailing epochs that share the last epoch's KL
    weight and inverse temperature count (a warm-up or a cycle changes what the objective
    measures). W is 10% of those epochs and at least :data:`IMPROVING_WINDOW`; None where they
    are fewer than 2 W."""
    if not rows:
        return None
    weights = ("kl_weight", "inverse_temperature")
    last = [rows[-1].get(key) for key in weights]
    values: list[float] = []
    for row in reversed(rows):
        value = row.get("train_objective")
        if [row.get(key) for key in weights] != last or not isinstance(value, (int, float)) or not math.isfinite(value):
            break
        values.append(float(value))
    window = max(IMPROVING_WINDOW, math.ceil(len(values) / 10))
    if len(values) < 2 * window:
        return None
    windows = [values[start : start + window] for start in range(0, len(values) - window + 1, window)]
    recent, best = windows[0], max(windows[1:], key=statistics.fmean)
    margin = 3 * math.sqrt((statistics.variance(recent) + statistics.variance(best)) / window)
    return statistics.fmean(recent) < statistics.fmean(best) - margin - train.lr_tolerance * abs(statistics.fmean(best))


@dataclass
class _Saved(Hook):
    """The run's ``files`` (:class:`~avi.runs.hooks.RunFiles`: checkpoint, metrics, summary,
    trackers) written with Ctrl-C held off, so that an interrupt lands before or after an
    epoch's files, never among them; then the epoch counts as saved (``fit.saved``)."""

    files: RunFiles
    fit: _Fit

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        with interrupts_held():
            stop = self.files.on_epoch(state, record)
            self.fit.saved = state.epoch
        return stop

    def on_end(self, state: TrainState) -> None:
        self.files.on_end(state)


@dataclass
class _EpochColumns(Hook):
    """Adds the run's per-epoch columns (KL weight, aggressive or not, encoder steps)."""

    fit: _Fit

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        record.update(self.fit.columns)
        return False


def stopped_early(run_dir: str | Path) -> bool:
    """Whether the run in ``run_dir`` finished before its epochs: a stopping rule ended it."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return False
    summary = read_json(path, SUMMARY_SCHEMA)
    done, epochs = summary.get("epochs_done"), summary.get("epochs")
    return summary["status"] == "finished" and isinstance(done, int) and isinstance(epochs, int) and done < epochs


def _start(
    held: ExitStack,
    config: Config | None,
    run_dir: str | Path | None,
    *,
    resume: bool,
    epochs: int | None,
    compile: bool | None,
    changes: dict[str, Any],
) -> _Fit:
    """Read or check the run directory, take its lock (main process, into ``held``), build the
    run and its state, restore a resumed one (its ``train`` settings ``changes`` made), and
    write config.json and a "running" summary."""
    config, run_dir, changes = _run_config(config, run_dir, resume=resume, epochs=epochs, changes=changes)
    last_epoch = config.train.epochs if epochs is None else epochs
    if last_epoch < 0:
        raise ConfigError(f"epochs must be non-negative, got {last_epoch}")
    distributed.init_from_env(resolve_device(config.train.device), config.train.batch_size)
    if distributed.world_size() > 1 and config.remedies.aggressive:
        raise ConfigError("aggressive encoder training runs in a single process; start it without torchrun")
    torch.manual_seed(config.train.seed)  # the run's seed: initial weights, then the training noise
    run = build_run(config)
    main = distributed.is_main()
    precision, fallback = resolve_precision(config.train.precision, run.device)
    if fallback is not None and main:
        print(f"note: {fallback}", file=sys.stderr)
    set_precision(precision, run.model, run.posterior)  # training steps only: metrics and evaluation in fp32
    state = _new_state(run)
    fit = _Fit(
        run_dir, run, state, run.splits.train.to(run.device), Replicas(), Validation(run), [], last_epoch, precision
    )
    if resume:
        _restore(held, fit, epochs, changed=bool(changes))
    elif main:
        _create(held, run_dir)
        write_json(run_dir / CONFIG, config.model_dump())
    fit.replicas = _replicas(fit, compile)
    if main:
        write_json(run_dir / SUMMARY, {"status": "running", "epochs_done": fit.state.epoch, "epochs": fit.last_epoch})
    return fit


def _run_config(
    config: Config | None, run_dir: str | Path | None, *, resume: bool, epochs: int | None, changes: dict[str, Any]
) -> tuple[Config, Path, dict[str, Any]]:
    """The run's config and directory, checked: a resumed run's (its ``train`` settings
    ``changes`` made, and ``epochs`` where it extends the run, added to them: the schedule spans
    it), or a new run's in a new directory (the default one where none is given)."""
    if resume:
        if run_dir is None:
            raise ConfigError("resuming needs the run directory")
        run_dir = require_run(run_dir, checkpoint=False)  # a fit stopped before its first epoch starts over
        config = _resumed_config(run_dir, changes)
        if epochs is not None and epochs > config.train.epochs:  # an extension: the schedule spans it
            config.train.epochs, changes = epochs, {**changes, "epochs": epochs}
        return config, run_dir, changes
    config = config or Config()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    check_output_dir(run_dir)  # before any data is loaded
    require_new_run(run_dir)
    return config, run_dir, changes


def _resumed_config(run_dir: Path, changes: dict[str, Any]) -> Config:
    """The config of the run in ``run_dir`` with its ``train`` settings ``changes`` made (``lr``,
    ``lr_schedule``, ``diagnostics_every``), each checked as the config checks it: one line naming the key otherwise."""
    config = read_config(run_dir)
    for key, value in changes.items():
        try:
            setattr(config.train, key, value)
        except ValidationError as err:
            message = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"invalid value for train.{key}: {message}, got {value!r}") from None
    return config


def _create(held: ExitStack, run_dir: Path) -> None:
    """Make a new run's directory and take its lock (into ``held``) before anything is written:
    a racing fit into it stops at the lock, or at the check after it where the racing fit
    finished first."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create run directory {run_dir}: {first_line(err)}") from None
    held.enter_context(run_lock(run_dir))
    require_new_run(run_dir)


def _new_state(run: TrainedRun) -> TrainState:
    """Optimisers for the model, the posterior and the objective's learned control variate;
    the estimator state (checkpointed), the generator seeded by ``train.seed``; the weight
    average from the initial weights where ``train.ema_decay`` asks for one."""
    config = run.config
    estimator = build_objective(config).init_state(run.model.data_dim)
    if estimator is not None:
        estimator.to(run.device)
    optimizers = make_optimizers(
        run.model, run.posterior, lr=config.train.lr, local_lr=config.inference.local_lr,
        eps=config.train.adam_eps, estimator=estimator,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(config.train.seed)
    decay = config.train.ema_decay
    average = None if decay is None else WeightAverage(run.model, run.posterior, decay)
    return TrainState(run.model, run.posterior, optimizers, generator, estimator, average=average)


def _restore(held: ExitStack, fit: _Fit, epochs: int | None, *, changed: bool = False) -> None:
    """Load the checkpoint of a resumed run into ``fit`` (under the run's lock): its state, its
    metrics, the validation points' parameters and the global random states. A run without a
    checkpoint (stopped before its first epoch ended) keeps the fresh state that its config's
    seed built, so it trains as a new run with that config would. ``changed``: the config's
    ``train.lr``, ``train.lr_schedule``, ``train.diagnostics_every`` or (extended)
    ``train.epochs`` is this call's, which config.json then records."""
    if distributed.is_main():
        held.enter_context(run_lock(fit.run_dir))
        if changed:  # the new settings recorded, under the lock
            write_json(fit.run_dir / CONFIG, fit.config.model_dump())
    if not (fit.run_dir / CHECKPOINT).is_file():
        return
    saved = read_checkpoint(fit.run_dir / CHECKPOINT)
    fit.state.load_state_dict(saved, f"checkpoint of {fit.run_dir}")
    if isinstance(saved.get("torch_rng"), Tensor):  # checkpoints of avi fit always have it
        torch.set_rng_state(saved["torch_rng"])
    if fit.run.device.type == "cuda" and saved.get("cuda_rng") is not None:  # the GPU's draws continue too
        torch.cuda.set_rng_state(saved["cuda_rng"], fit.run.device)
    fit.rows[:] = saved["metrics"]
    done = fit.saved = fit.state.epoch
    if epochs is None:  # a run extended by an earlier --epochs is not cut back to its config's
        fit.last_epoch = max(fit.last_epoch, done)
    elif fit.last_epoch < done:
        raise ConfigError(
            f"run {fit.run_dir} has done {done} epochs: resuming it needs epochs >= {done}, got {fit.last_epoch}"
        )
    params = saved.get("validation_params")
    if params is not None and not isinstance(params, Tensor):
        raise RunError(f"checkpoint of {fit.run_dir} holds validation parameters that are not a tensor")
    fit.validation.params = None if params is None else params.to(fit.run.device)


def _replicas(fit: _Fit, compile: bool | None) -> Replicas:
    """This process's share of the steps: DDP across processes (gradients averaged; the other
    ranks' noise decorrelated from rank 0's), and ``torch.compile`` of the step where asked."""
    config, state = fit.config, fit.state
    step = None
    if distributed.world_size() > 1:
        step = data_parallel(state.model, state.posterior, state.estimator)
        if not distributed.is_main():
            torch.manual_seed(config.train.seed + 7919 * distributed.rank() + state.epoch)
    if config.train.compile if compile is None else compile:
        if config.inference.strategy != "amortized":  # a resumed run of another strategy
            raise ConfigError(f"compile applies to the amortized strategy, not {config.inference.strategy!r}")
        step = compile_step(step or ShardStep(state.model, state.posterior, state.estimator), fit.train_data)
    return Replicas(distributed.rank(), distributed.world_size(), step)
