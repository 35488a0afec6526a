"""``avi fit --estimator NAME``: runs that train with each estimator, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--estimator", "magic"], "invalid value 'magic' for objective.estimator"),
        (["--estimator", "vimco"], "estimator 'vimco' does not apply to objective 'elbo'"),
        (["--objective", "iwae", "--estimator", "dreg", "--family", "iaf"], "needs a Gaussian family"),
        (["--estimator", "gumbel"], "needs a model with discrete latents"),
    ],
)
def test_bad_estimators_are_one_line_with_exit_code_2(
    run_avi, small_config, tmp_path: Path, args: list[str], message: str
) -> None:
    run = tmp_path / "run"
    result = run_avi("fit", str(small_config(1)), "--out", str(run), *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not run.exists()  # refused before a run directory is made


@pytest.mark.parametrize(
    ("args", "estimator"),
    [
        (["--estimator", "score-baseline"], "score-baseline"),
        (["--estimator", "nvil"], "nvil"),
        (["--objective", "iwae", "--estimator", "dreg", "--k", "3"], "dreg"),
    ],
)
def test_fit_trains_with_a_chosen_estimator(
    run_avi, small_config, tmp_path: Path, args: list[str], estimator: str
) -> None:
    run = tmp_path / "run"
    result = run_avi("fit", str(small_config(1)), "--out", str(run), *args)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "config.json").read_text())["objective"]["estimator"] == estimator
