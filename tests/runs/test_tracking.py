"""Optional trackers: TensorBoard events and an MLflow store hold the run's per-epoch ELBO;
TensorBoard also step-level scalars, images of square data, and the config as hparams."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.runs.conftest import small_job


def _fit(tmp_path: Path, tracker: str, dim: int = 12) -> tuple[Path, list[float]]:
    from avi.runs.config import load_config
    from avi.runs.train import run_fit

    config = tmp_path / "job.toml"
    job = small_job(2, points=300).replace("synthetic_dim = 12", f"synthetic_dim = {dim}")
    config.write_text(job + f"[tracking]\n{tracker} = true\n")
    run = run_fit(load_config(config), tmp_path / "run")
    return run, _column(run, "train_elbo")


def _column(run: Path, key: str) -> list[float]:
    with (run / "metrics.csv").open() as f:
        return [float(row[key]) for row in csv.DictReader(f)]


def _events(path: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_tensorboard_holds_epoch_and_step_scalars_and_hparams_without_images(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.plugins.hparams.metadata import parse_experiment_plugin_data, parse_session_start_info_plugin_data

    run, elbo = _fit(tmp_path, "tensorboard", dim=5)  # 5 is not a square: no images
    events = _events(run / "tensorboard")
    logged = events.Scalars("train_elbo")
    assert [e.step for e in logged] == [1, 2]
    assert [e.value for e in logged] == pytest.approx(elbo, rel=1e-6)
    assert "val_elbo" in events.Tags()["scalars"]
    assert events.Tags()["images"] == []
    # 243 training points in batches of 50: 5 optimiser steps an epoch, one record at each end
    steps = _events(run / "tensorboard" / "steps").Scalars("step/train_objective")
    assert [e.step for e in steps] == [5, 10]
    assert [e.value for e in steps] == pytest.approx(_column(run, "train_objective"), rel=1e-5)
    content = events.PluginTagToContent("hparams")
    hparams = parse_session_start_info_plugin_data(content["_hparams_/session_start_info"]).hparams
    assert hparams["model.latent_dim"].number_value == 2
    assert hparams["train.batch_size"].number_value == 50
    assert hparams["data.source"].string_value == "synthetic"
    assert hparams["model.hidden"].string_value == "[16]"
    assert "train.early_stop" not in hparams  # None: left out
    metrics = parse_experiment_plugin_data(content["_hparams_/experiment"]).metric_infos
    assert {"train_elbo", "val_elbo", "active_units"} <= {m.name.tag for m in metrics}


def test_hparams_list_every_metric_a_row_had(tmp_path: Path) -> None:
    """The collapse diagnostics are in every N-th row (``train.diagnostics_every``): a run whose
    last row lacks them, or a resumed call that recorded none, still lists them in the HParams
    experiment, with the rows before this call (``earlier``) counted."""
    pytest.importorskip("tensorboard")
    from tensorboard.plugins.hparams.metadata import parse_experiment_plugin_data

    from avi.runs.tracking import TensorBoardTracker

    def listed(earlier: list[dict[str, Any]], rows: list[dict[str, Any]], name: str) -> set[str]:
        tracker = TensorBoardTracker(tmp_path / name, hparams={"train.lr": 0.01}, earlier=earlier)
        for row in rows:
            tracker.log(row)
        tracker.close()
        content = _events(tmp_path / name).PluginTagToContent("hparams")
        return {m.name.tag for m in parse_experiment_plugin_data(content["_hparams_/experiment"]).metric_infos}

    diagnosed = {"epoch": 1, "train_elbo": -5.0, "active_units": 2, "mutual_information": 0.5}
    plain = {"epoch": 2, "train_elbo": -4.0, "active_units": None, "mutual_information": float("nan")}
    both = {"train_elbo", "active_units", "mutual_information"}
    assert listed([], [diagnosed, plain], "interrupted") == both
    assert listed([diagnosed], [plain], "resumed") == both
    assert listed([], [plain], "never") == {"train_elbo"}


def test_tensorboard_draws_reconstructions_and_samples_of_square_images(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run, _ = _fit(tmp_path, "tensorboard", dim=784)  # MNIST's 28 x 28
    events = _events(run / "tensorboard")
    recon, samples = events.Images("images/reconstructions"), events.Images("images/samples")
    assert [e.step for e in recon] == [1, 2] and [e.step for e in samples] == [1, 2]
    # 16 inputs in two rows of 8, each row above its reconstructions; 32 samples in 4 rows of 8
    assert (recon[-1].width, recon[-1].height) == (8 * 28, 4 * 28)
    assert (samples[-1].width, samples[-1].height) == (8 * 28, 4 * 28)
    assert recon[0].encoded_image_string != recon[1].encoded_image_string  # the model changed


def test_a_resumed_run_logs_each_epoch_to_tensorboard_once(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from avi.runs.train import run_fit

    run, _ = _fit(tmp_path, "tensorboard")
    run_fit(run_dir=run, resume=True, epochs=3)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    elbo = _column(run, "train_elbo")
    logged = events.Scalars("train_elbo")
    assert [e.step for e in logged] == [1, 2, 3]  # not 1, 2, 1, 2, 3: the history is not replayed
    assert [e.value for e in logged] == pytest.approx(elbo, rel=1e-6)
    steps = _events(run / "tensorboard" / "steps").Scalars("step/train_objective")
    assert [e.step for e in steps] == [5, 10, 15]  # the optimiser steps go on


def test_a_resumed_writer_sorts_after_the_first_in_the_same_second(tmp_path: Path, monkeypatch) -> None:
    """TensorBoard reads event files in name order, SECOND.HOST.PID.N with N a per-process count:
    a resume in the same process and second as the first writer, with N going from 9 to 10,
    would sort first. The tracker waits for the next second instead."""
    pytest.importorskip("tensorboard")
    from tensorboard.summary.writer import event_file_writer

    from avi.runs.tracking import TensorBoardTracker

    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(9))
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events.out.tfevents.notes").write_text("")  # not a writer's: ignored
    first = TensorBoardTracker(tmp_path / "tb")
    first.close()
    resumed = TensorBoardTracker(tmp_path / "tb", purge_step=3)
    resumed.close()
    names = [p.name for p in (tmp_path / "tb").glob("events.out.tfevents.*") if not p.name.endswith("notes")]
    assert [name.rsplit(".", 1)[-1] for name in sorted(names)] == ["9", "10"]


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


def test_step_records_are_the_means_over_each_window_of_steps(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    import torch

    from avi.inference.loop import StepInfo
    from avi.runs.tracking import TensorBoardTracker

    # an epoch of 5 steps of 10 points after 7 earlier steps; step i's objective sum is 10 * i
    state = SimpleNamespace(step=7, dense_optimizers=[torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.01)])
    tracker = TensorBoardTracker(tmp_path / "tb", step_every=2)
    tracker.on_epoch_start(state)  # type: ignore[arg-type]
    sums = torch.zeros(3)
    for i in range(1, 6):
        sums += torch.tensor([10.0 * i, 20.0 * i, 10.0 * i])
        tracker.on_step(state, StepInfo(1, 10 * i, 50, sums))  # type: ignore[arg-type]
    tracker.close()
    events = _events(tmp_path / "tb" / "steps")
    objective = events.Scalars("step/train_objective")
    assert [e.step for e in objective] == [9, 11, 12]  # every 2 steps, and the epoch's last
    assert [e.value for e in objective] == pytest.approx([1.5, 3.5, 5.0])  # steps 1-2, 3-4, 5
    assert [e.value for e in events.Scalars("step/train_reconstruction")] == pytest.approx([3.0, 7.0, 10.0])
    assert [e.value for e in events.Scalars("step/lr")] == pytest.approx([0.01] * 3)
