"""Collapse diagnostics and remedies through the command line: metrics columns, the figure,
``avi evaluate --json`` fields, the epochs' KL weights, aggressive epochs, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest


def read_metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_every_run_records_collapse_diagnostics(run_avi, small_config, tmp_path: Path) -> None:
    run = tmp_path / "plain"
    fitted = run_avi("fit", str(small_config(2)), "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    rows = read_metrics(run)
    for row in rows:
        assert {"kl_dim_0", "kl_dim_1", "active_units", "mutual_information"} <= set(row)
        assert float(row["kl_weight"]) == 1.0 and row["aggressive"] == "0"
        assert float(row["train_objective"]) == pytest.approx(float(row["train_elbo"]), abs=1e-4)
        assert 0 <= int(row["active_units"]) <= 2
    assert (run / "collapse.png").stat().st_size > 1000

    evaluated = run_avi("evaluate", str(run), "--k", "10", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert isinstance(result["kl_per_dim"], list) and len(result["kl_per_dim"]) == 2
    assert isinstance(result["active_units"], int) and isinstance(result["mutual_information"], float)
    # Marginal KLs of a mean-field q add up to its KL.
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-4)


def test_remedies_set_each_epochs_weight_and_keep_the_true_elbo(run_avi, small_config, tmp_path: Path) -> None:
    run = tmp_path / "remedies"
    fitted = run_avi(
        "fit", str(small_config(4)), "--out", str(run), "--kl-warmup", "2", "--beta", "0.5", "--free-bits", "0.05"
    )
    assert fitted.returncode == 0, fitted.stderr
    rows = read_metrics(run)
    # beta x warm-up at each epoch's midpoint: 0.5 x (0.25, 0.75, 1, 1).
    assert [float(r["kl_weight"]) for r in rows] == [0.125, 0.375, 0.5, 0.5]
    for r in rows:  # the ELBO is reconstruction - KL whatever was optimised
        assert float(r["train_elbo"]) == pytest.approx(float(r["train_reconstruction"]) - float(r["train_kl"]), abs=1e-4)
        assert float(r["train_objective"]) > float(r["train_elbo"])
    config = json.loads((run / "config.json").read_text())["remedies"]
    assert (config["kl_warmup"], config["beta"], config["free_bits"]) == (2, 0.5, 0.05)

    cycled = tmp_path / "cycles"
    fitted = run_avi("fit", str(small_config(4)), "--out", str(cycled), "--kl-cycles", "2")
    assert fitted.returncode == 0, fitted.stderr
    assert [float(r["kl_weight"]) for r in read_metrics(cycled)] == [0.5, 1.0, 0.5, 1.0]


def test_tempering_sets_each_epochs_inverse_temperature_and_keeps_the_true_elbo(
    run_avi, small_config, tmp_path: Path
) -> None:
    run = tmp_path / "tempered"
    fitted = run_avi("fit", str(small_config(4)), "--out", str(run), "--temper", "2")
    assert fitted.returncode == 0, fitted.stderr
    rows = read_metrics(run)
    # from 0.01 to 1 over 2 epochs, at each epoch's midpoint: 0.01 + 0.99 x (0.25, 0.75), then 1
    assert [float(r["inverse_temperature"]) for r in rows] == pytest.approx([0.2575, 0.7525, 1.0, 1.0])
    assert all(float(r["kl_weight"]) == 1.0 for r in rows)
    for r in rows:  # the ELBO is reconstruction - KL whatever was optimised; at beta = 1 it is the objective
        elbo = float(r["train_reconstruction"]) - float(r["train_kl"])
        assert float(r["train_elbo"]) == pytest.approx(elbo, abs=1e-4)
    assert float(rows[0]["train_objective"]) != pytest.approx(float(rows[0]["train_elbo"]), abs=1e-3)
    assert float(rows[3]["train_objective"]) == pytest.approx(float(rows[3]["train_elbo"]), abs=1e-4)
    assert json.loads((run / "config.json").read_text())["remedies"]["temper"] == 2


def test_aggressive_training_and_the_made_decoder(run_avi, small_config, tmp_path: Path) -> None:
    run = tmp_path / "aggressive"
    fitted = run_avi("fit", str(small_config(3)), "--out", str(run), "--aggressive", "--decoder", "made")
    assert fitted.returncode == 0, fitted.stderr
    rows = read_metrics(run)
    assert rows[0]["aggressive"] == "1" and int(rows[0]["encoder_steps"]) >= 10 * 10  # 10 batches
    flags = [int(r["aggressive"]) for r in rows]
    mi = [float(r["mutual_information"]) for r in rows]
    for e in range(1, len(rows)):  # aggressive while each epoch's MI is at least the one before's
        assert flags[e] == int(flags[e - 1] == 1 and mi[e - 1] >= (mi[e - 2] if e > 1 else 0.0))
    assert json.loads((run / "config.json").read_text())["model"]["decoder"] == "made"
    evaluated = run_avi("evaluate", str(run), "--k", "5", "--json")
    assert evaluated.returncode == 0, evaluated.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beta", "-1"], "remedies.beta"),
        (["--free-bits", "-0.5"], "remedies.free_bits"),
        (["--kl-warmup", "10"], "KL warm-up ends at epoch 10, after the run's 3 epochs"),
        (["--kl-cycles", "5"], "5 KL cycles need at least as many epochs"),
        (["--free-bits", "0.1", "--family", "full-rank"], "free bits per dimension need the mean-field family"),
        (["--beta", "0.5", "--objective", "iwae"], "objective 'iwae' has none"),
        (["--aggressive", "--strategy", "per-datapoint"], "aggressive training needs an inference network"),
        (["--decoder", "pixelcnn"], "model.decoder"),
        (["--decoder", "made", "--model", "ppca"], "MADE decoder is for a VAE"),
    ],
)
def test_bad_remedies_are_one_line_errors(run_avi, small_config, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_avi("fit", str(small_config(3)), "--out", str(tmp_path / "bad"), *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[remedies]\nkl_warmup_start = 3\nkl_warmup = 2\n", "starts at epoch 3, not before its end at epoch 2"),
        ("[remedies]\nannealing = true\n", "unknown remedy 'annealing'; choose from"),
    ],
)
def test_bad_remedies_in_a_config_file(run_avi, small_config, tmp_path: Path, section: str, message: str) -> None:
    config = tmp_path / "job.toml"
    config.write_text(small_config(3).read_text() + section)
    result = run_avi("fit", str(config), "--out", str(tmp_path / "bad"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
