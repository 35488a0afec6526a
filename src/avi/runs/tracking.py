"""Optional experiment tracking: TensorBoard and MLflow mirror the run's metrics.

The run directory stays the source of truth; a tracker copies each finished epoch's row (MLflow
also the resolved config as parameters). TensorBoard also gets the training objective every
few optimiser steps, images each epoch where the data are square images (reconstructions
beside their inputs, and decoded draws from the prior), and at the end the config as
hyperparameters with the final metrics, for its HParams tab. Both are off by default and need
their extras (``pip install -e ".[tracking]"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from torch import Tensor

from avi.errors import ConfigError
from avi.inference.loop import Hook, StepInfo
from avi.inference.state import TrainState
from avi.runs.config import Config
from avi.runs.images import ImageBatch, image_batch
from avi.runs.load import TrainedRun

__all__ = [
    "HPARAM_METRICS",
    "IMAGE_EPOCHS",
    "MLflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "flat_config",
    "open_trackers",
]

#: the final metrics beside the hyperparameters in TensorBoard's HParams tab, where a run has them
HPARAM_METRICS = (
    "train_elbo", "train_reconstruction", "train_kl", "val_elbo", "val_reconstruction", "val_kl", "active_units",
    "mutual_information",
)  # fmt: skip

#: at most about this many epochs of images per run (about 50 kB an epoch for MNIST): every epoch
#: up to 100 epochs, every ceil(epochs / 100)-th beyond
IMAGE_EPOCHS = 100


class Tracker(Hook):
    """A hook of the run (for step-level records) that also mirrors each finished epoch's row
    (``log``, called after the run's files are written) and is closed at the end of the run."""

    def log(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None


def _after_existing_events(log_dir: Path) -> None:
    """Wait (at most a second) until the clock's second is past that of every event file in
    ``log_dir``. TensorBoard reads a directory's files in the order of their names,
    ``events.out.tfevents.SECOND.HOST.PID.N`` with N a per-process count: a resumed run's new file
    made in the same second as the last, in the same process, could sort first (N = 10 before
    N = 9), and its purge of the steps after the resume would apply before the old steps."""
    fields = (path.name.split(".") for path in log_dir.glob("events.out.tfevents.*"))
    seconds = [int(field[3]) for field in fields if len(field) > 3 and field[3].isdigit()]  # others not ours
    if seconds and time.time() < max(seconds) + 1:
        time.sleep(max(seconds) + 1 - time.time())


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)}


def flat_config(config: Config) -> dict[str, Any]:
    """The config as ``{"section.key": value}``."""
    dump = config.model_dump()
    return {f"{section}.{key}": value for section, values in dump.items() for key, value in values.items()}


class TensorBoardTracker(Tracker):
    """Events under ``log_dir`` (``RUN_DIR/tensorboard``):

    - each epoch's scalars, at step = epoch;
    - ``step/train_objective``, ``step/train_reconstruction`` and ``step/train_kl`` (means per
      point over the last ``step_every`` optimiser steps, and over the rest at an epoch's end)
      and ``step/lr``, at step = the optimiser step, in the run ``log_dir/steps`` (one run
      cannot hold both axes: a resumed run's purge drops every step past its first new epoch);
    - ``images/reconstructions`` and ``images/samples`` every ``image_every`` epochs, where
      ``images`` (a run and its :class:`~avi.runs.images.ImageBatch`) says what to draw;
    - at the end, ``hparams`` (bool, number and string values; others as text, None left out)
      with the :data:`HPARAM_METRICS` that any row had (``earlier``: a resumed run's rows before
      this call), whose values TensorBoard's HParams tab reads from this run's epoch scalars.

    A resumed run writes to the same directories, which hold its earlier records: ``purge_step``
    (its first new epoch) and, for the steps, the first new optimiser step have TensorBoard drop
    what an interrupted call logged from there on."""

    def __init__(
        self,
        log_dir: Path,
        purge_step: int | None = None,
        *,
        hparams: dict[str, Any] | None = None,
        earlier: Sequence[dict[str, Any]] = (),
        images: tuple[TrainedRun, ImageBatch] | None = None,
        step_every: int = 50,
        image_every: int = 1,
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tracking.tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer_class = SummaryWriter
        self.log_dir, self.hparams, self.images = log_dir, hparams, images
        self.step_every, self.image_every = step_every, image_every
        _after_existing_events(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.steps: Any = None  # the steps' writer, opened at the first epoch of this call
        self.final: dict[str, float] = {}  # each HParams metric's last value: not every row has all
        for row in earlier:
            self._keep_final(row)
        self.epoch: int | None = None  # the last epoch logged
        self.base, self.calls = 0, 0  # the optimiser step before the epoch, and the epoch's steps so far
        self.mark: tuple[int, Tensor | None] = (0, None)  # the examples and running sums at the last record

    def on_epoch_start(self, state: TrainState) -> None:
        if self.steps is None:
            _after_existing_events(self.log_dir / "steps")
            self.steps = self.writer_class(log_dir=str(self.log_dir / "steps"), purge_step=state.step + 1)
        self.base, self.calls, self.mark = state.step, 0, (0, None)

    def on_step(self, state: TrainState, info: StepInfo) -> None:
        """Every ``step_every`` steps of an epoch and at its end, the means over the steps since
        the last record (one host synchronisation). The steps are counted here: an epoch
        function may advance ``state.step`` only at its end (aggressive training)."""
        self.calls += 1
        if self.calls % self.step_every and info.examples < info.total:
            return
        examples, sums = self.mark
        window = info.sums if sums is None else info.sums - sums
        objective, reconstruction, kl = (window / max(info.examples - examples, 1)).tolist()
        step = self.base + self.calls
        for name, value in (("objective", objective), ("reconstruction", reconstruction), ("kl", kl)):
            self.steps.add_scalar(f"step/train_{name}", value, global_step=step)
        for opt in state.dense_optimizers[:1]:
            self.steps.add_scalar("step/lr", opt.param_groups[0]["lr"], global_step=step)
        self.mark = (info.examples, info.sums.clone())

    def log(self, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, global_step=epoch)
        if self.images is not None and epoch % self.image_every == 0:
            run, batch = self.images
            for name, pixels in batch.draw(run.model, run.posterior).items():
                self.writer.add_images(f"images/{name}", pixels, global_step=epoch, dataformats="NCHW")
        self._keep_final(row)
        self.epoch = epoch
        self.writer.flush()
        if self.steps is not None:
            self.steps.flush()

    def _keep_final(self, row: dict[str, Any]) -> None:
        self.final |= {k: v for k, v in _scalars(row).items() if k in HPARAM_METRICS}

    def close(self) -> None:
        if self.hparams is not None and self.epoch is not None:
            self._write_hparams(self.hparams, self.epoch)
        self.writer.close()
        if self.steps is not None:
            self.steps.close()

    def _write_hparams(self, hparams: dict[str, Any], epoch: int) -> None:
        """The summaries of ``SummaryWriter.add_hparams``, written into this run rather than a
        new one named by the time, at the last epoch: the metrics' values are then this run's
        own epoch scalars. A metric is listed if any row had it (the collapse diagnostics are
        in every ``train.diagnostics_every``-th row, maybe not the last)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries
        from torch.utils.tensorboard.writer import FileWriter

        values = {k: v if isinstance(v, (int, float, str)) else str(v) for k, v in hparams.items() if v is not None}
        metrics = {key: self.final[key] for key in HPARAM_METRICS if key in self.final}
        file_writer = cast(FileWriter, self.writer.file_writer)  # open until close
        for summary in hparams_summaries(values, metrics):
            file_writer.add_summary(summary, epoch)


class MLflowTracker(Tracker):
    """An MLflow run with the config as parameters (default store: ``RUN_DIR/mlflow.db``, a SQLite
    file; MLflow 3 keeps the plain ``mlruns`` file store in maintenance mode)."""

    def __init__(self, uri: str, run_name: str, config: Config) -> None:
        try:
            import mlflow
        except ImportError:
            raise ConfigError("tracking.mlflow needs MLflow: pip install mlflow-skinny sqlalchemy alembic") from None
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("avi")
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v)[:500] for k, v in flat_config(config).items()})

    def log(self, row: dict[str, Any]) -> None:
        self.mlflow.log_metrics(_scalars(row), step=int(row["epoch"]))

    def close(self) -> None:
        self.mlflow.end_run()


def open_trackers(
    config: Config, run_dir: Path, history: list[dict[str, Any]], run: TrainedRun | None = None
) -> list[Tracker]:
    """The trackers that ``config.tracking`` turns on, writing beside or into the run directory;
    the run adds them to its hooks too (their step-level records). ``history``, the rows of a
    resumed run's earlier epochs, goes to the trackers that start empty (a resumed run is a new
    MLflow run), not to TensorBoard's directory, which has them (its HParams metrics are those
    of every row). TensorBoard draws images of
    ``run``'s model where its data are square images, every epoch of a run of up to 100 and
    about 100 times in a longer one."""
    trackers: list[Tracker] = []
    if config.tracking.tensorboard:
        batch = None if run is None else image_batch(run)
        trackers.append(
            TensorBoardTracker(
                run_dir / "tensorboard",
                int(history[-1]["epoch"]) + 1 if history else None,
                hparams=flat_config(config),
                earlier=history,
                images=None if run is None or batch is None else (run, batch),
                image_every=max(1, math.ceil(config.train.epochs / IMAGE_EPOCHS)),
            )
        )
    if config.tracking.mlflow:
        uri = config.tracking.mlflow_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        mlflow = MLflowTracker(uri, run_dir.name, config)
        for row in history:
            mlflow.log(row)
        trackers.append(mlflow)
    return trackers
