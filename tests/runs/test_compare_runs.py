"""``avi compare RUN_DIR RUN_DIR``: both runs shown, the better value marked, Markdown and figure;
each run's k and data shown and a warning where they differ; every tied run marked, and rows
without a direction (active units) never."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from avi.cli import app
from avi.runs.compare import Row, best_runs, collect, comparison_warnings
from avi.runs.rundir import evaluation_path, write_json
from tests.runs.conftest import small_job


def _avi(*args: str) -> Result:
    """``avi ARGS`` in this process, on a terminal 200 columns wide (no cell wrapped)."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from avi.runs.config import load_config
    from avi.runs.train import run_fit

    root = tmp_path_factory.mktemp("compare")
    runs = []
    for name, epochs in (("short", 1), ("long", 6)):
        path = root / f"{name}.toml"
        path.write_text(small_job(epochs, points=400))
        runs.append(run_fit(load_config(path), root / name))
    return runs[0], runs[1]


def _cells(stdout: str, label: str) -> list[str]:
    """The cells of the table row ``label`` as printed, one per run."""
    row = next(line for line in stdout.splitlines() if f"│ {label} " in line)
    return [c.strip() for c in row.strip("│ ").split("│")][1:]


def test_compare_prints_both_runs_and_marks_the_better_value(two_runs, tmp_path: Path) -> None:
    short, long = two_runs
    out = tmp_path / "cmp"
    result = _avi("compare", str(short), str(long), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert "short" in result.stdout and "long" in result.stdout
    cells = _cells(result.stdout, "train ELBO")
    assert len(cells) == 2 and cells[1].endswith("*") and not cells[0].endswith("*")  # 6 epochs beat 1
    markdown = (out / "comparison.md").read_text()
    assert markdown.count("**") >= 2 and "train ELBO" in markdown
    assert (out / "comparison.png").stat().st_size > 1000
    assert _cells(result.stdout, "data") == ["synthetic, binarize dynamic"] * 2
    assert "warning" not in result.stderr  # one data, no evaluations: nothing differs


def test_compare_json_names_the_best_run(two_runs, tmp_path: Path) -> None:
    short, long = two_runs
    result = _avi("compare", str(short), str(long), "--out", str(tmp_path / "cmp"), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [Path(r["run"]).name for r in report["runs"]] == ["short", "long"]
    assert report["runs"][1]["train_elbo"] > report["runs"][0]["train_elbo"]
    assert [Path(run).name for run in report["best"]["train_elbo"]] == ["long"]
    assert report["warnings"] == []


def test_compare_needs_runs_or_a_model(tmp_path: Path) -> None:
    result = _avi("compare")
    assert result.exit_code == 2 and "give run directories" in result.stderr
    result = _avi("compare", str(tmp_path))
    assert result.exit_code == 2 and "not a run directory" in result.stderr
    result = _avi("compare", str(tmp_path), "--methods", "mh")
    assert result.exit_code == 2 and "--methods and --quick apply to --model" in result.stderr


def _gaps(family: str, approximation: float, amortization: float) -> dict:
    """A decomposition as ``avi gaps`` saves it."""
    return {
        "family": family, "split": "test", "data": "test split", "n": 10, "log_likelihood": -9.0,
        "elbo_optimal": -9.0 - approximation, "elbo_amortized": -9.0 - approximation - amortization,
        "approximation_gap": approximation, "amortization_gap": amortization,
    }  # fmt: skip


def _copy(run: Path, to: Path) -> Path:
    """A copy of a run without its checkpoint: what ``avi compare`` reads."""
    to.mkdir()
    for name in ("config.json", "metrics.csv", "summary.json"):
        shutil.copyfile(run / name, to / name)
    return to


def _evaluated(run: Path, k: int, log_likelihood: float, *, data: str | None = None, units: int = 1) -> None:
    """Save an evaluation of ``run`` as ``avi evaluate`` does: k samples, on the test split or ``data``."""
    values = {"n": 40, "data": data or "test split", "k": k, "elbo": log_likelihood - 0.5, "kl": 0.5}
    values |= {"log_likelihood": log_likelihood, "log_likelihood_stderr": 0.01, "active_units": units}
    write_json(evaluation_path(run, k, data), values)


def test_compare_shows_k_warns_on_mixed_k_and_stars_every_tied_run(two_runs, tmp_path: Path) -> None:
    """A quick k=10 evaluation beside a careful k=1000 one: both shown with their k, one warning
    line on the terminal and in comparison.md; equal log-likelihoods both starred; active units
    (1 against 2: more is not better) never starred."""
    quick, careful = _copy(two_runs[0], tmp_path / "quick"), _copy(two_runs[1], tmp_path / "careful")
    _evaluated(quick, 10, -9.0, units=1)
    _evaluated(careful, 1000, -9.0, units=2)
    out = tmp_path / "cmp"
    result = _avi("compare", str(quick), str(careful), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert _cells(result.stdout, "IWAE samples k") == ["10", "1000"]
    assert _cells(result.stdout, "evaluated on") == ["test split", "test split"]
    assert _cells(result.stdout, "test log p(x) (IWAE)") == ["-9.00 ± 0.01 *"] * 2
    assert _cells(result.stdout, "active units") == ["1", "2"]
    assert _cells(result.stdout, "test KL") == ["0.50", "0.50"]  # no direction: equal, yet not starred
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "different k (quick: 10; careful: 1000)" in warnings[0]
    markdown = (out / "comparison.md").read_text()
    assert "**warning:** runs were evaluated with different k (quick: 10; careful: 1000)" in markdown
    assert markdown.count("**-9.00 ± 0.01**") == 2 and "| active units | 1 | 2 |" in markdown


def test_compare_warns_on_different_data(two_runs, tmp_path: Path) -> None:
    """Runs evaluated on two --data files, at one k: a warning about the data, none about k; a
    run trained on differently binarised data: a warning about the training data."""
    a, b, c = (_copy(two_runs[0], tmp_path / name) for name in "abc")
    _evaluated(a, 100, -9.0, data="one.npy")
    _evaluated(b, 100, -9.0, data="two.npy")
    runs = [collect(a), collect(b)]
    assert [r["evaluation_data"] for r in runs] == ["one.npy", "two.npy"]
    assert comparison_warnings(runs) == [
        "runs were evaluated on different data (a: one.npy; b: two.npy): their test numbers do not compare"
    ]
    config = json.loads((c / "config.json").read_text())
    config["data"]["binarize"] = "static"
    (c / "config.json").write_text(json.dumps(config))
    warnings = comparison_warnings([collect(a), collect(c)])
    assert warnings == [
        "runs differ in data (a: synthetic, binarize dynamic; c: synthetic, binarize static): "
        "no number compares across them"
    ]  # c has no evaluation: nothing to say about the data or k of one


def test_ties_within_the_shown_digits_or_the_standard_errors() -> None:
    """Equal after rounding to the two decimals shown: tied; with standard errors, within two
    standard errors of the difference (2 x sqrt(2) x 0.05 = 0.141) of the best: tied."""
    row = Row("test_log_likelihood", "log p(x)", "higher", "se")
    rounded = [{"test_log_likelihood": v} for v in (-9.004, -9.0, -9.01)]
    assert best_runs(rounded, row) == [0, 1]
    with_errors = [{"test_log_likelihood": v, "se": 0.05} for v in (-9.1, -9.3, -9.0)]
    assert best_runs(with_errors, row) == [0, 2]
    assert best_runs(with_errors, Row("test_log_likelihood", "log p(x)", None)) == []
    assert best_runs(with_errors, Row("test_log_likelihood", "log p(x)", "lower", "se")) == [1]


def test_gaps_of_the_runs_own_family_and_no_nan_as_best(two_runs, tmp_path: Path) -> None:
    run = _copy(two_runs[0], tmp_path / "run")
    family = json.loads((run / "config.json").read_text())["inference"]["family"]
    assert family == "mean-field"
    # `avi gaps RUN --family full-rank` also writes a file: alphabetically it comes first
    (run / "gaps-full-rank-test.json").write_text(json.dumps(_gaps("full-rank", 9.0, 9.0)))
    (run / "gaps-mean-field-test.json").write_text(json.dumps(_gaps("mean-field", 1.0, 2.0)))
    got = collect(run)
    assert (got["approximation_gap"], got["amortization_gap"]) == (1.0, 2.0)
    # a run without validation data has a NaN validation ELBO: never the best, wherever it stands
    runs = [{"val_elbo": float("nan")}, {"val_elbo": -90.0}, {"val_elbo": -95.0}]
    row = Row("val_elbo", "validation ELBO", "higher")
    assert best_runs(runs, row) == [1] and best_runs(runs[::-1], row) == [1]
    assert best_runs(runs[:2], row) == []  # one finite value: nothing to compare
