"""The command line as a user runs it: fit, evaluate, resume after a kill, and one-line errors."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avi.cli import app
from avi.runs.config import load_config
from avi.runs.train import run_fit


def read_metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_fit_writes_run_directory_and_evaluate_reports_json(avi_cli, small_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fitted = avi_cli("fit", str(small_config(3)), "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    assert {"config.json", "metrics.csv", "checkpoint.pt", "summary.json"} <= {p.name for p in run.iterdir()}
    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key in ("train_elbo", "val_elbo", "train_kl", "train_reconstruction", "wall_seconds"):
        assert np.isfinite(float(rows[-1][key]))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 3
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["latent_dim"] == 2 and config["data"]["binarize"] == "dynamic"

    evaluated = avi_cli("evaluate", str(run), "--k", "30", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["k"] == 30 and result["n"] == 60
    # IWAE with k samples bounds log p(x) more tightly than the ELBO (up to MC error, large here).
    assert result["log_likelihood"] >= result["elbo"] - 0.5
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"], abs=1e-3)


def test_per_datapoint_strategy_fits_and_evaluates(avi_cli, small_config, tmp_path: Path) -> None:
    run = tmp_path / "local"
    fitted = avi_cli(
        "fit", str(small_config(2)), "--strategy", "per-datapoint", "--family", "full-rank", "--out", str(run)
    )
    assert fitted.returncode == 0, fitted.stderr
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["posterior"]["table"].shape == (486, 2 + 3)  # 600 - 60 test - 54 validation points
    evaluated = avi_cli("evaluate", str(run), "--k", "10", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["strategy"] == "per-datapoint"


def test_killed_run_keeps_checkpoint_and_resumes_to_the_same_epoch_count(avi_cli, small_config, tmp_path: Path) -> None:
    """SIGKILL needs a process of its own; the resume does not."""
    run = tmp_path / "killed"
    config = small_config(40)
    proc = subprocess.Popen(
        [sys.executable, "-m", "avi", "fit", str(config), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        summary = run / "summary.json"
        if summary.exists() and json.loads(summary.read_text() or "{}").get("epochs_done", 0) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(run / "checkpoint.pt", weights_only=False)  # intact: loads
    done = state["epoch"]
    assert 3 <= done < 40
    assert len(state["metrics"]) == done
    # a kill during a write may leave a hidden temporary file beside the intact real one

    resumed = avi_cli("fit", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 41))
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 40
    assert not list(run.glob(".*.tmp"))  # the resumed run's writes removed any leftovers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--preset", "nope"], "unknown preset 'nope'"),
        (["fit", "--batch-size", "0"], "train.batch_size"),
        (["fit", "--strategy", "magic"], "inference.strategy"),
        (["fit", "--data", "/nonexistent/data.npy"], "does not exist"),
        (["evaluate", "/nonexistent/run"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(avi_cli, args: list[str], message: str) -> None:
    _one_line_error(avi_cli(*args), message)


def test_bad_input_in_a_real_process_is_one_line_with_exit_code_2(run_avi) -> None:
    """What the interpreter itself may add (a warning at import, a traceback at exit) shows in a
    process of its own only."""
    _one_line_error(run_avi("fit", "--data", "/nonexistent/data.npy"), "does not exist")


def _one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_bad_data_files_name_the_problem(avi_cli, tmp_path: Path) -> None:
    nan = tmp_path / "nan.npy"
    x = np.random.default_rng(0).random((50, 6))
    x[3, 2] = np.nan
    np.save(nan, x)
    wide = tmp_path / "wide.npy"
    np.save(wide, np.random.default_rng(0).integers(0, 2, (50, 6)).astype(float) * 3)
    unreadable = tmp_path / "broken.npz"
    unreadable.write_bytes(b"not a zip archive")
    config = tmp_path / "bad.toml"
    config.write_text("[model]\nlatent_dim = 2\nhidden = [8]\ncolour = 'red'\n")
    cases = [
        (["fit", "--data", str(nan)], "NaN or infinite"),
        (["fit", "--data", str(wide)], "outside [0, 1]"),
        (["fit", "--data", str(unreadable)], "cannot read data file"),
        (["fit", str(config)], "unknown config key 'model.colour'"),
        (["fit", str(tmp_path / "none.toml")], "config file"),
    ]
    for args, message in cases:
        result = avi_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_evaluate_rejects_data_of_the_wrong_dimension_and_bad_k(avi_cli, small_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert avi_cli("fit", str(small_config(1)), "--out", str(run)).returncode == 0
    other = tmp_path / "other.npy"
    np.save(other, np.ones((5, 7)))
    result = avi_cli("evaluate", str(run), "--data", str(other))
    assert result.returncode == 2 and "dimension 7 but the model expects 12" in result.stderr
    result = avi_cli("evaluate", str(run), "--k", "0")
    assert result.returncode == 2 and "k must be a positive integer" in result.stderr
    not_binary = tmp_path / "half.npy"
    np.save(not_binary, np.full((5, 12), 0.5))
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["binarize"] == "dynamic"  # so 0.5 is binarised, not rejected
    assert avi_cli("evaluate", str(run), "--data", str(not_binary), "--k", "5").returncode == 0


def test_resume_refuses_to_change_the_configuration(avi_cli, small_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert avi_cli("fit", str(small_config(1)), "--out", str(run)).returncode == 0
    result = avi_cli("fit", "--resume", str(run), "--batch-size", "7")
    assert result.returncode == 2 and "--batch-size" in result.stderr
    with_config = avi_cli("fit", str(small_config(1)), "--resume", str(run))  # the config is an argument
    only = "(only --epochs, --lr, --lr-schedule, --diagnostics-every, --compile and --threads)"
    assert with_config.returncode == 2 and f"cannot change config {only}" in with_config.stderr
    again = avi_cli("fit", str(small_config(1)), "--out", str(run))
    assert again.returncode == 2 and "already holds a run" in again.stderr
    fewer = avi_cli("fit", "--resume", str(run), "--epochs", "0")
    assert fewer.returncode == 2 and "has done 1 epochs: resuming it needs epochs >= 1, got 0" in fewer.stderr
    extended = avi_cli("fit", "--resume", str(run), "--epochs", "2")
    assert extended.returncode == 0, extended.stderr
    plain = avi_cli("fit", "--resume", str(run))  # the config's 1 epoch does not undo the extension
    assert plain.returncode == 0, plain.stderr
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 2


def test_resume_repairs_a_metrics_table_behind_its_checkpoint(small_config, tmp_path: Path) -> None:
    # killed after the checkpoint's write and before the table's: the table lacks the last epoch
    run = run_fit(load_config(small_config(2)), tmp_path / "run")
    table = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text("".join(table.splitlines(keepends=True)[:-1]))
    run_fit(run_dir=run, resume=True, epochs=2)  # no epoch left to train
    assert (run / "metrics.csv").read_text() == table


def test_threads_override_the_config_for_one_call(small_config, tmp_path: Path, monkeypatch) -> None:
    """``avi fit --resume RUN --threads N`` sets N intra-op threads for that call (a run resumed on
    another machine) instead of the config's ``train.threads`` (1 here), which holds otherwise;
    the command line sets them, the library does not."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    run = str(tmp_path / "run")
    runner = CliRunner()
    for args in (
        [str(small_config(1)), "--out", run],
        ["--resume", run, "--epochs", "2", "--threads", "2"],
        ["--resume", run, "--epochs", "3"],
    ):
        result = runner.invoke(app, ["fit", *args])
        assert result.exit_code == 0, result.output
    assert calls == [1, 2, 1]
