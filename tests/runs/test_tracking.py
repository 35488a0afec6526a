"""Optional trackers: TensorBoard events and an MLflow store hold the run's per-epoch ELBO."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.runs.conftest import small_job


def _fit(tmp_path: Path, tracker: str) -> tuple[Path, list[float]]:
    from avi.runs.config import load_config
    from avi.runs.train import run_fit

    config = tmp_path / "job.toml"
    config.write_text(small_job(2, points=300) + f"[tracking]\n{tracker} = true\n")
    run = run_fit(load_config(config), tmp_path / "run")
    with (run / "metrics.csv").open() as f:
        return run, [float(row["train_elbo"]) for row in csv.DictReader(f)]


def test_tensorboard_events_hold_the_elbo_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, elbo = _fit(tmp_path, "tensorboard")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = events.Scalars("train_elbo")
    assert [e.step for e in logged] == [1, 2]
    assert [e.value for e in logged] == pytest.approx(elbo, rel=1e-6)
    assert "val_elbo" in events.Tags()["scalars"]


def test_a_resumed_run_logs_each_epoch_to_tensorboard_once(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from avi.runs.train import run_fit

    run, _ = _fit(tmp_path, "tensorboard")
    run_fit(run_dir=run, resume=True, epochs=3)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    with (run / "metrics.csv").open() as f:
        elbo = [float(row["train_elbo"]) for row in csv.DictReader(f)]
    logged = events.Scalars("train_elbo")
    assert [e.step for e in logged] == [1, 2, 3]  # not 1, 2, 1, 2, 3: the history is not replayed
    assert [e.value for e in logged] == pytest.approx(elbo, rel=1e-6)


def test_mlflow_store_holds_the_same_metrics_and_the_config(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    run, elbo = _fit(tmp_path, "mlflow")
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    (logged_run,) = client.search_runs([client.get_experiment_by_name("avi").experiment_id])
    history = client.get_metric_history(logged_run.info.run_id, "train_elbo")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx(elbo, rel=1e-6)
    assert logged_run.data.params["model.latent_dim"] == "2"


def test_trackers_are_off_by_default() -> None:
    from avi.runs.config import Config

    assert not Config().tracking.tensorboard and not Config().tracking.mlflow
