"""Run controls of ``avi fit`` and ``avi evaluate``: early stopping from the command line, which
checkpoint an evaluation scores, the learning-rate schedule on resume, whether the validation
bound was still improving, and a resumed run with nothing left to train. In-process (typer's
CliRunner) on the small synthetic job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from avi.cli import app
from avi.runs.rundir import read_checkpoint

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
