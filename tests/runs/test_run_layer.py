"""The run layer from Python: run_fit with hooks and early stopping, load_run, divergence, and a
run directory written by avi 0.1.0 before the run layer was rebuilt."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import avi
from avi.cli import app
from avi.errors import ConfigError
from avi.inference import Diverged, Hook, StepInfo, TrainState, run
from avi.runs.config import load_config
from avi.runs.hooks import EarlyStopping, Validation
from avi.runs.rundir import read_checkpoint

from .conftest import small_job

FIXTURES = Path(__file__).parent.parent / "fixtures"
LAYOUT = {"config.json", "metrics.csv", "checkpoint.pt", "summary.json"}


class Counting(Hook):
    """Counts steps and epochs and adds a column of its own to every epoch's record."""

    def __init__(self) -> None:
        self.steps = 0
        self.epochs: list[int] = []

    def on_step(self, state: TrainState, info: StepInfo) -> None:
        self.steps += 1
        assert 0 < info.examples <= info.total

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        self.epochs.append(state.epoch)
        record["my_metric"] = float(state.epoch) * 2
        return False


def _config(tmp_path: Path, epochs: int = 3, **train: Any):
    path = tmp_path / "job.toml"
    path.write_text(small_job(epochs))
    return load_config(path, {"train": train})


def test_python_run_has_the_cli_layout_and_runs_hooks(tmp_path: Path, run_avi) -> None:
    hook = Counting()
    run_dir = avi.run_fit(_config(tmp_path), tmp_path / "py", hooks=[hook])
    result = run_avi("fit", str(tmp_path / "job.toml"), "--out", str(tmp_path / "cli"))
    assert result.returncode == 0, result.stderr
    py = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    cli = {p.name for p in (tmp_path / "cli").iterdir() if not p.name.startswith(".")}
    assert LAYOUT <= py and py == cli
    loaded = avi.load_run(run_dir)
    assert hook.epochs == [1, 2, 3] and hook.steps == 3 * math.ceil(len(loaded.splits.train) / 50)
    rows = loaded.metrics
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["my_metric"] for r in rows] == [2.0, 4.0, 6.0]  # a hook's column lands in metrics.csv


def test_early_stopping_stops_and_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    # 30 training points at a large learning rate: the validation bound peaks and then falls
    config = _config(tmp_path, epochs=60, early_stop=3, lr=0.05)
    config.data.subset = 30
    run_dir = avi.run_fit(config, tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = avi.load_run(run_dir).metrics
    best_row = max(rows, key=lambda r: r["val_elbo"])
    assert summary["status"] == "finished" and summary["epochs_done"] < 60  # stopped early
    assert summary["best_epoch"] == best_row["epoch"] == summary["epochs_done"] - 3
    best = read_checkpoint(run_dir / "best.pt")
    assert best["epoch"] == best_row["epoch"] and best["metrics"][-1]["val_elbo"] == best_row["val_elbo"]


def test_load_run_leaves_the_global_random_state_alone(tmp_path: Path, run_avi) -> None:
    py = avi.run_fit(_config(tmp_path, epochs=1), tmp_path / "py")
    result = run_avi("fit", str(tmp_path / "job.toml"), "--epochs", "1", "--out", str(tmp_path / "cli"))
    assert result.returncode == 0, result.stderr
    for run_dir in (py, tmp_path / "cli"):
        torch.manual_seed(1234)
        before = torch.get_rng_state()
        loaded = avi.load_run(run_dir)
        assert torch.equal(torch.get_rng_state(), before)
        assert loaded.config.model.latent_dim == 2 and len(loaded.metrics) == 1
        assert loaded.model.latent_dim == 2 and not loaded.posterior.training


@pytest.mark.parametrize("family", ["mean-field", "full-rank"])
def test_divergence_stops_with_one_line_and_keeps_the_last_finite_checkpoint(tmp_path: Path, run_avi, family) -> None:
    (tmp_path / "job.toml").write_text(small_job(5))
    out = tmp_path / "run"
    result = run_avi("fit", str(tmp_path / "job.toml"), "--family", family, "--lr", "1e3", "--out", str(out))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr and len(errors) == 1  # the progress bar's last state may precede it
    assert "diverged" in errors[0] and "epoch 1, step" in errors[0]
    summary_text = (out / "summary.json").read_text()
    summary = json.loads(summary_text, parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))
    assert summary["status"] == "diverged"
    if (out / "checkpoint.pt").exists():  # an epoch finished before the divergence: its weights are finite
        saved = read_checkpoint(out / "checkpoint.pt")
        assert all(torch.isfinite(v).all() for v in saved["model"].values())
        assert saved["epoch"] < summary["diverged"]["epoch"]


def test_a_run_written_before_the_run_layer_loads_and_evaluates_the_same(tmp_path: Path, run_avi) -> None:
    run_dir = tmp_path / "old"
    shutil.copytree(FIXTURES / "old_run", run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["source"] = "synthetic"  # the fixture's data are regenerated from its seed
    expected = json.loads((FIXTURES / "old_run_evaluation.json").read_text())
    loaded = avi.load_run(run_dir)
    assert len(loaded.metrics) == 2 and loaded.config.objective.name == "iwae"
    result = run_avi("evaluate", str(run_dir), "--k", "50", "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["n"] == expected["n"]
    # per-point noise seeded by (seed, point): the importance-sampled estimate is reproduced exactly
    assert got["log_likelihood"] == pytest.approx(expected["log_likelihood"], rel=1e-6)
    assert math.isfinite(got["elbo"])
    resumed = run_avi("fit", "--resume", str(run_dir), "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert len(avi.load_run(run_dir).metrics) == 3


def test_early_stopping_of_a_resumed_run_remembers_its_best_epoch(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "val_elbo": -3.0}, {"epoch": 2, "val_elbo": -2.0}, {"epoch": 3, "val_elbo": -2.5}]
    stopping = EarlyStopping(2, tmp_path, Validation(None), rows)  # type: ignore[arg-type]
    assert (stopping.best, stopping.best_epoch) == (-2.0, 2)


def test_early_stopping_needs_a_validation_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="validation_fraction > 0"):
        load_config(None, {"train": {"early_stop": 3}, "data": {"validation_fraction": 0}})


def test_a_hooks_numpy_column_reaches_metrics_and_the_run_resumes(tmp_path: Path) -> None:
    class NumpyColumn(Hook):
        def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
            record["np_metric"] = np.float32(state.epoch) / 2
            record["torch_metric"] = torch.tensor(float(state.epoch))
            return False

    run_dir = avi.run_fit(_config(tmp_path, epochs=1), tmp_path / "run", hooks=[NumpyColumn()])
    avi.run_fit(run_dir=run_dir, resume=True, epochs=2, hooks=[NumpyColumn()])  # loads weights_only
    rows = avi.load_run(run_dir).metrics
    assert [r["np_metric"] for r in rows] == [0.5, 1.0] and [r["torch_metric"] for r in rows] == [1, 2]


def test_hooks_end_also_when_an_epoch_raises() -> None:
    class Ending(Hook):
        ended = 0

        def on_end(self, state: TrainState) -> None:
            Ending.ended += 1

    def diverging(state: TrainState, data: Any, hooks: Any) -> Any:
        raise Diverged(state.epoch + 1, 3)

    state = TrainState(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), [], torch.Generator())  # type: ignore[arg-type]
    with pytest.raises(Diverged, match="epoch 1, step 3"):
        run(state, None, diverging, epochs=2, hooks=[Ending()])  # type: ignore[arg-type]
    assert Ending.ended == 1


def test_aggressive_epochs_stop_on_a_non_finite_objective(tmp_path: Path) -> None:
    config = _config(tmp_path, epochs=2, lr=1e3)
    config.remedies.aggressive = True
    with pytest.raises(Diverged, match="diverged"):
        avi.run_fit(config, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        (["--lr", "1e30"], "the validation ELBO"),  # finite weights whose q on new points is not
        (["--lr", "1e300"], "a parameter"),  # the epoch's last update overflowed
        (["--strategy", "per-datapoint", "--set", "inference.local_lr=1099511627776.0"], "the validation ELBO"),
    ],
)
def test_a_step_that_overflows_after_the_last_finite_objective_is_divergence(
    tmp_path: Path, flags: list[str], what: str
) -> None:
    """Caught before the epoch's diagnostics or files see the non-finite weights (in process:
    the command line's threads are restored after)."""
    job = tmp_path / "job.toml"
    job.write_text(
        '[model]\nname = "vae"\nlatent_dim = 2\nhidden = [16]\n'
        '[data]\nsource = "synthetic"\nsynthetic_dim = 12\nsynthetic_points = 60\n'
        "[train]\nepochs = 2\nbatch_size = 50\nthreads = 1\n"
    )
    threads = torch.get_num_threads()
    result = CliRunner().invoke(app, ["fit", str(job), *flags, "--out", str(tmp_path / "run")])
    torch.set_num_threads(threads)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: training diverged: {what} is not finite at epoch 1 ")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
