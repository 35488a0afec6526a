"""Optional experiment tracking: TensorBoard and MLflow mirror the per-epoch metrics.

The run directory stays the source of truth; a tracker only copies each epoch's row (and, for
MLflow, the resolved config as parameters). Both are off by default and need their extras
(``pip install -e ".[tracking]"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from avi.errors import ConfigError
from avi.runs.config import Config

__all__ = ["Tracker", "open_trackers"]


class Tracker(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)}


class TensorBoardTracker:
    """Scalars under ``RUN_DIR/tensorboard``, one step per epoch. A resumed run writes to the
    same directory, which holds its earlier epochs; ``purge_step`` (its first new epoch) has
    TensorBoard drop what an interrupted call logged from that epoch on."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tracking.tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, row: dict[str, Any]) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, global_step=int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
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
        params = {
            f"{section}.{key}": value
            for section, values in config.model_dump().items()
            for key, value in values.items()
        }
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log(self, row: dict[str, Any]) -> None:
        self.mlflow.log_metrics(_scalars(row), step=int(row["epoch"]))

    def close(self) -> None:
        self.mlflow.end_run()


def open_trackers(config: Config, run_dir: Path, history: list[dict[str, Any]]) -> list[Tracker]:
    """The trackers that ``config.tracking`` turns on, writing beside or into the run directory.
    ``history``, the rows of a resumed run's earlier epochs, goes to the trackers that start
    empty (a resumed run is a new MLflow run), not to TensorBoard's directory, which has them."""
    trackers: list[Tracker] = []
    if config.tracking.tensorboard:
        trackers.append(TensorBoardTracker(run_dir / "tensorboard", int(history[-1]["epoch"]) + 1 if history else None))
    if config.tracking.mlflow:
        uri = config.tracking.mlflow_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        mlflow = MLflowTracker(uri, run_dir.name, config)
        for row in history:
            mlflow.log(row)
        trackers.append(mlflow)
    return trackers
