"""Run controls of ``avi fit`` and ``avi evaluate``: early stopping from the command line, which
checkpoint an evaluation scores, the learning-rate schedule on resume, whether the validation
bound was still improving, and a resumed run with nothing left to train. In-process (typer's
CliRunner) on the small synthetic job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from avi.cli import app
from avi.errors import ConfigError
from avi.runs.rundir import best_evaluation, read_checkpoint, read_metrics
from avi.runs.train import run_fit

from .conftest import small_job


def _avi(*args: str) -> Any:
    """``avi ARGS`` in this process; the result's exit code, stdout and stderr."""
    return CliRunner().invoke(app, list(args))


def _one_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.stderr, result.exception)
    return lines[0]


def _job(tmp_path: Path, epochs: int = 3) -> str:
    path = tmp_path / f"job-{epochs}.toml"
    path.write_text(small_job(epochs))
    return str(path)


def test_early_stop_flag_keeps_the_best_checkpoint_and_needs_a_validation_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fitted = _avi("fit", _job(tmp_path), "--early-stop", "2", "--out", str(run))
    assert fitted.exit_code == 0, (fitted.stderr, fitted.exception)
    assert json.loads((run / "config.json").read_text())["train"]["early_stop"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert read_checkpoint(run / "best.pt")["epoch"] == summary["best_epoch"] >= 1
    other = str(tmp_path / "other")
    no_split = _avi("fit", _job(tmp_path), "--early-stop", "2", "--set", "data.validation_fraction=0", "--out", other)
    assert "train.early_stop watches the validation ELBO: it needs data.validation_fraction > 0" in _one_line(no_split)
    assert "invalid value for train.early_stop" in _one_line(_avi("fit", "--early-stop", "0", "--out", other))
    assert not Path(other).exists()


def _evaluated(run: Path, *args: str) -> dict[str, Any]:
    result = _avi("evaluate", str(run), "--k", "5", "--json", *args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return json.loads(result.stdout)


def test_evaluate_scores_the_checkpoint_asked_for_and_keeps_each_ones_files(tmp_path: Path) -> None:
    # 30 training points at a large rate: the validation bound peaks early and the run stops
    run = tmp_path / "run"
    args = ["--early-stop", "2", "--subset", "30", "--lr", "0.05", "--out", str(run)]
    assert _avi("fit", _job(tmp_path, epochs=60), *args).exit_code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] < summary["epochs_done"] < 60
    best = _evaluated(run, "--checkpoint", "best")
    last = _evaluated(run)
    assert (best["checkpoint"], best["checkpoint_epoch"]) == ("best", summary["best_epoch"])
    assert (last["checkpoint"], last["checkpoint_epoch"]) == ("last", summary["epochs_done"])
    assert best["elbo"] != last["elbo"]  # other weights
    saved = {name: json.loads((run / name).read_text()) for name in ("evaluation-k5.json", "evaluation-best-k5.json")}
    assert saved == {"evaluation-k5.json": last, "evaluation-best-k5.json": best}
    assert (run / "evaluation-best-k5-points.csv").is_file() and (run / "evaluation-k5-points.csv").is_file()
    assert best_evaluation(run) == last  # at equal k the run as it ended comes first
    table = _avi("evaluate", str(run), "--k", "5", "--checkpoint", "best")
    assert f"best checkpoint, epoch {summary['best_epoch']}" in " ".join(table.stdout.split())
    unknown = _one_line(_avi("evaluate", str(run), "--checkpoint", "first"))
    assert unknown == "error: unknown checkpoint 'first'; choose last or best"
    (run / "best.pt").unlink()
    missing = _one_line(_avi("evaluate", str(run), "--checkpoint", "best"))
    assert missing.endswith(
        f"run {run} has no best.pt: a run keeps its best checkpoint when trained with --early-stop PATIENCE"
    )


def test_resume_changes_the_schedule_and_records_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _avi("fit", _job(tmp_path, epochs=2), "--out", str(run)).exit_code == 0
    resumed = _avi("fit", "--resume", str(run), "--epochs", "4", "--lr-schedule", "burda")
    assert resumed.exit_code == 0, (resumed.stderr, resumed.exception)
    assert json.loads((run / "config.json").read_text())["train"]["lr_schedule"] == "burda"
    # epochs 3 and 4 lie in Burda's stage 1 (epochs 2 to 4): lr 10^(-1/7)
    assert [row["lr"] for row in read_metrics(run)] == pytest.approx([1e-3, 1e-3] + [1e-3 * 10 ** (-1 / 7)] * 2)
    bad = _one_line(_avi("fit", "--resume", str(run), "--lr-schedule", "steps"))
    assert bad.startswith("error: invalid value for --lr-schedule: Input should be 'constant', 'burda'")
    with pytest.raises(ConfigError, match=r"^invalid value for train.lr_schedule: Input should be .*, got 'steps'$"):
        run_fit(None, run, resume=True, lr_schedule="steps")
    assert json.loads((run / "config.json").read_text())["train"]["lr_schedule"] == "burda"
