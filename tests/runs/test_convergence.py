"""Fits that converge: ``avi fit`` with its defaults reaches the maximum likelihood of PPCA (closed
form, Tipping and Bishop 1999) and of factor analysis (scikit-learn's), and the plateau schedule
that stops it halves the rate, ends the run and resumes as the rows say."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avi.cli import app
from avi.models.linear_gaussian import ppca_max_log_likelihood
from avi.runs.config import Config, ModelConfig, TrainConfig, load_config
from avi.runs.hooks import LearningRate
from avi.runs.load import load_trained
from avi.runs.rundir import SUMMARY, read_json

#: the gap to the maximum likelihood, nats per point, that a default fit must close
TOLERANCE = 0.05


def _data(tmp_path: Path, noise: np.ndarray) -> Path:
    """2,000 points of 10 dimensions from 3 factors, x = W z + mu + eps, eps ~ N(0, diag(noise))."""
    rng = np.random.default_rng(0)
    w, mu = rng.normal(size=(10, 3)), 2 * rng.normal(size=10)
    x = rng.normal(size=(2000, 3)) @ w.T + mu + rng.normal(size=(2000, 10)) * np.sqrt(noise)
    path = tmp_path / "X.npy"
    np.save(path, x.astype(np.float32))
    return path


@pytest.fixture
def threads() -> Iterator[None]:
    """The command line sets the process's threads: restore them after the fit."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _fit_with_defaults(tmp_path: Path, model: str, data: Path) -> tuple[float, np.ndarray, dict]:
    """``avi fit --model MODEL --data DATA --latent-dim 3``: the fitted model's exact mean
    log-likelihood of its training points, those points, and the summary."""
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["fit", "--model", model, "--data", str(data), "--latent-dim", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    run = load_trained(out)
    x = run.splits.train.x.double()
    with torch.no_grad():
        fitted = run.model.double().exact_log_marginal(x).mean().item()
    return fitted, x.numpy(), read_json(out / SUMMARY, {})


def test_ppca_with_cli_defaults_reaches_the_closed_form_maximum_likelihood(tmp_path: Path, threads: None) -> None:
    fitted, x, summary = _fit_with_defaults(tmp_path, "ppca", _data(tmp_path, np.full(10, 0.5)))
    best = ppca_max_log_likelihood(torch.from_numpy(x), 3).item()
    assert best - TOLERANCE < fitted <= best + 1e-6  # measured: 0.0005-0.002 short
    assert summary["status"] == "finished" and summary["converged"]
    assert summary["epochs_done"] == summary["converged_epoch"] < 2000


def test_factor_analysis_with_cli_defaults_reaches_scikit_learns_maximum_likelihood(
    tmp_path: Path, threads: None
) -> None:
    from sklearn.decomposition import FactorAnalysis

    noise = np.random.default_rng(1).uniform(0.1, 1.0, 10)
    fitted, x, summary = _fit_with_defaults(tmp_path, "factor-analysis", _data(tmp_path, noise))
    best = FactorAnalysis(3, tol=1e-8, max_iter=10_000).fit(x).score(x)  # mean log-likelihood per point
    assert fitted > best - TOLERANCE  # measured: 0.003-0.008 short
    assert summary["converged"] and summary["epochs_done"] < 2000


def test_linear_models_default_to_the_plateau_schedule_and_the_vae_keeps_its_defaults() -> None:
    ppca = load_config(None, {"model": {"name": "ppca"}})
    assert (ppca.train.lr_schedule, ppca.train.lr, ppca.train.epochs) == ("plateau", 0.01, 2000)
    assert ppca.inference.family == "full-rank"
    chosen = load_config(None, {"model": {"name": "factor-analysis"}, "train": {"epochs": 30, "lr": 0.1}})
    assert (chosen.train.lr_schedule, chosen.train.lr, chosen.train.epochs) == ("plateau", 0.1, 30)
    vae = Config(model=ModelConfig(name="vae"))
    assert (vae.train.lr_schedule, vae.train.lr, vae.train.epochs, vae.inference.family) == (
        "constant", 1e-3, 10, "mean-field"
    )  # fmt: skip


def _feed(schedule: LearningRate, objectives: list[float], first: int = 1) -> list[tuple[float, bool]]:
    """Each epoch's rate and whether the schedule stopped the run, for the training objectives given."""
    out = []
    for epoch, value in enumerate(objectives, start=first):
        record = {"epoch": epoch, "train_objective": value}
        stop = schedule.on_epoch(SimpleNamespace(epoch=epoch), record)  # type: ignore[arg-type]
        out.append((record["lr"], stop))
    return out


PLATEAU = TrainConfig(lr=0.01, lr_schedule="plateau", lr_patience=3, lr_reductions=2, lr_tolerance=1e-3)


def test_plateau_halves_the_rate_every_patience_epochs_of_a_flat_objective_then_stops() -> None:
    schedule = LearningRate(PLATEAU)
    steps = _feed(schedule, [-10.0] * 9)
    # the first comparison needs 2 windows (epoch 6), the next waits a window (epoch 9)
    assert [rate for rate, _ in steps] == [0.01] * 6 + [0.005] * 3
    assert [stop for _, stop in steps] == [False] * 8 + [True]
    assert (schedule.reductions, schedule.converged) == (2, 9)


def test_plateau_keeps_the_rate_while_the_window_means_climb_through_the_noise() -> None:
    noise = np.random.default_rng(0).normal(0, 0.05, 120)
    climbing = list(-10 + 0.005 * np.arange(120) + noise)  # a tenth of an epoch's noise per epoch
    schedule = LearningRate(TrainConfig(lr=0.01, lr_schedule="plateau"))  # windows of 20 epochs
    assert all(rate == 0.01 and not stop for rate, stop in _feed(schedule, climbing))
    flat = LearningRate(TrainConfig(lr=0.01, lr_schedule="plateau"))
    assert [rate for rate, _ in _feed(flat, list(-10 + noise))][-1] < 0.01  # the same noise, flat: halved


def test_a_resumed_plateau_continues_from_its_rows_also_at_a_new_rate() -> None:
    objectives = [-10.0 + 0.1 * min(e, 4) for e in range(12)]
    whole = LearningRate(PLATEAU)
    expected = _feed(whole, objectives)
    first = LearningRate(PLATEAU)
    rows = [{"epoch": e, "train_objective": v} for e, v in enumerate(objectives[:7], start=1)]
    _feed(first, objectives[:7])
    resumed = LearningRate(PLATEAU, rows)
    assert (resumed.objectives, resumed.since, resumed.reductions) == (first.objectives, first.since, first.reductions)
    assert _feed(resumed, objectives[7:], first=8) == expected[7:]
    faster = LearningRate(PLATEAU.model_copy(update={"lr": 0.04}), rows)
    assert faster.rate(8) == pytest.approx(0.04 * 0.5**first.reductions)


def test_resume_with_a_new_lr_continues_at_it_and_records_it(tmp_path: Path) -> None:
    from avi.runs.rundir import CONFIG, read_metrics
    from avi.runs.train import run_fit

    data = {"source": "synthetic", "synthetic_dim": 5, "synthetic_points": 200}
    config = load_config(None, {"model": {"name": "ppca", "latent_dim": 2}, "data": data, "train": {"epochs": 2}})
    run = run_fit(config, tmp_path / "run")
    run_fit(None, run, resume=True, epochs=3, lr=0.05)
    assert read_json(run / CONFIG, {})["train"]["lr"] == 0.05
    assert [row["lr"] for row in read_metrics(run)] == [0.01, 0.01, 0.05]
