"""The command line for the objectives beyond the reverse KL and the encoder regularisers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--objective", "renyi", "--alpha", "0.5"], {"name": "renyi", "alpha": 0.5}),
        (["--objective", "cubo"], {"name": "cubo", "cubo_order": 2.0}),
        (["--objective", "rws", "--k", "4"], {"name": "rws", "k": 4}),
    ],
    ids=["renyi", "cubo", "rws"],
)
def test_fit_with_each_objective(run_avi, small_config, tmp_path: Path, args: list[str], expected: dict) -> None:
    run = tmp_path / "run"
    fitted = run_avi("fit", str(small_config(2)), *args, "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    objective = json.loads((run / "config.json").read_text())["objective"]
    assert expected.items() <= objective.items()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and math.isfinite(summary["val_elbo"])


def test_regularised_encoder_fits_and_evaluates_with_the_cubo_sandwich(run_avi, small_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fitted = run_avi("fit", str(small_config(2)), "--denoise", "0.2", "--weight-norm", "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    inference = json.loads((run / "config.json").read_text())["inference"]
    assert inference["denoise"] == 0.2 and inference["weight_norm"] is True
    evaluated = run_avi("evaluate", str(run), "--k", "50", "--cubo", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["cubo_order"] == 2.0 and result["cubo_stderr"] >= 0
    assert result["elbo"] <= result["log_likelihood"] <= result["cubo"]
    plain = json.loads(run_avi("evaluate", str(run), "--k", "5", "--json").stdout)
    assert "cubo" not in plain


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--objective", "renyi", "--alpha", "nan"], "objective.alpha"),
        (["--objective", "cubo", "--cubo-order", "1"], "objective.cubo_order"),
        (["--denoise", "-0.1"], "inference.denoise"),
        (["--strategy", "per-datapoint", "--weight-norm"], "regularise an encoder"),
        (["--objective", "chi"], "objective.name"),
        (["--consistency", "-1"], "inference.consistency"),
        (["--consistency", "1", "--transform", "shear"], "inference.transform"),
        (["--consistency", "1"], "need 28x28 images"),  # the small job's data have 12 dimensions
    ],
)
def test_bad_objective_and_regulariser_settings_are_one_line_errors(
    run_avi, small_config, tmp_path: Path, args: list[str], message: str
) -> None:
    """Refused before anything is written: no run directory is left behind."""
    run = tmp_path / "run"
    result = run_avi("fit", str(small_config(1)), "--out", str(run), *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not run.exists()


IMAGE_JOB = """
[model]
latent_dim = 2
hidden = [16]
[data]
source = "synthetic"
synthetic_dim = 784
synthetic_points = 300
[train]
epochs = 1
batch_size = 50
threads = 1
"""


@pytest.mark.parametrize("transform", ["translate", "rotate"])
def test_fit_with_consistency_regularisation(run_avi, tmp_path: Path, transform: str) -> None:
    config = tmp_path / "images.toml"
    config.write_text(IMAGE_JOB)
    run = tmp_path / "run"
    fitted = run_avi("fit", str(config), "--consistency", "0.5", "--transform", transform, "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    inference = json.loads((run / "config.json").read_text())["inference"]
    assert inference["consistency"] == 0.5 and inference["transform"] == transform
    evaluated = run_avi("evaluate", str(run), "--k", "5", "--consistency", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["consistency_kl_translate"] >= 0 and result["consistency_kl_rotate"] >= 0
    assert result["probe_accuracy"] is None  # synthetic data have no labels


def test_consistency_penalty_is_kept_alongside_a_kl_remedy(run_avi, tmp_path: Path) -> None:
    # the penalty is applied after a remedy reweights the ELBO's KL, so the logged objective
    # (weighted ELBO minus the penalty) differs from the same seeded run without the penalty
    # (were the penalty dropped, the two runs would be identical)
    config = tmp_path / "images.toml"
    config.write_text(IMAGE_JOB)
    for weight in ("0", "5"):
        fitted = run_avi(
            "fit", str(config), "--beta", "0.5", "--consistency", weight, "--out", str(tmp_path / f"run-{weight}")
        )
        assert fitted.returncode == 0, fitted.stderr
    rows = [(tmp_path / f"run-{w}" / "metrics.csv").read_text().splitlines() for w in ("0", "5")]
    header = rows[0][0].split(",")
    column = header.index("train_objective")
    with_penalty, without = float(rows[1][1].split(",")[column]), float(rows[0][1].split(",")[column])
    assert with_penalty != without


def test_evaluate_on_a_labelled_data_file_scores_the_probe(run_avi, tmp_path: Path) -> None:
    # labels 'y' of an .npz file reach the linear probe of --consistency, in fit and in evaluate
    generator = np.random.default_rng(0)
    y = generator.integers(0, 2, 300)
    x = np.clip(0.2 + 0.6 * y[:, None] * (np.arange(784) < 392) + 0.1 * generator.random((300, 784)), 0, 1)
    data = tmp_path / "labelled.npz"
    np.savez(data, x=x.astype(np.float32), y=y)
    config = tmp_path / "images.toml"
    config.write_text(IMAGE_JOB)
    run = tmp_path / "run"
    assert run_avi("fit", str(config), "--data", str(data), "--out", str(run)).returncode == 0
    evaluated = run_avi("evaluate", str(run), "--data", str(data), "--k", "5", "--consistency", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["probe_accuracy"] is not None
