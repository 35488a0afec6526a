"""``avi compare RUN_DIR RUN_DIR``: both runs shown, the better value marked, Markdown and figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runs.conftest import small_job


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


def test_compare_prints_both_runs_and_marks_the_better_value(run_avi, two_runs, tmp_path: Path) -> None:
    short, long = two_runs
    out = tmp_path / "cmp"
    result = run_avi("compare", str(short), str(long), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "short" in result.stdout and "long" in result.stdout
    train_row = next(line for line in result.stdout.splitlines() if "train ELBO" in line)
    cells = [c.strip() for c in train_row.strip("│ ").split("│")][1:]
    assert len(cells) == 2 and cells[1].endswith("*") and not cells[0].endswith("*")  # 6 epochs beat 1
    markdown = (out / "comparison.md").read_text()
    assert markdown.count("**") >= 2 and "train ELBO" in markdown
    assert (out / "comparison.png").stat().st_size > 1000


def test_compare_json_names_the_best_run(run_avi, two_runs, tmp_path: Path) -> None:
    short, long = two_runs
    result = run_avi("compare", str(short), str(long), "--out", str(tmp_path / "cmp"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [Path(r["run"]).name for r in report["runs"]] == ["short", "long"]
    assert report["runs"][1]["train_elbo"] > report["runs"][0]["train_elbo"]
    assert Path(report["best"]["train_elbo"]).name == "long"


def test_compare_needs_runs_or_a_model(run_avi, tmp_path: Path) -> None:
    result = run_avi("compare")
    assert result.returncode == 2 and "give run directories" in result.stderr
    result = run_avi("compare", str(tmp_path))
    assert result.returncode == 2 and "not a run directory" in result.stderr
    result = run_avi("compare", str(tmp_path), "--methods", "mh")
    assert result.returncode == 2 and "--methods picks the inference methods of --model" in result.stderr


def _gaps(family: str, approximation: float, amortization: float) -> dict:
    """A decomposition as ``avi gaps`` saves it."""
    return {
        "family": family, "split": "test", "data": "test split", "n": 10, "log_likelihood": -9.0,
        "elbo_optimal": -9.0 - approximation, "elbo_amortized": -9.0 - approximation - amortization,
        "approximation_gap": approximation, "amortization_gap": amortization,
    }  # fmt: skip


def test_gaps_of_the_runs_own_family_and_no_nan_as_best(two_runs, tmp_path: Path) -> None:
    from avi.runs.compare import best_of, collect

    short, long = two_runs
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.csv", "summary.json"):
        (run / name).write_bytes((short / name).read_bytes())
    family = json.loads((run / "config.json").read_text())["inference"]["family"]
    assert family == "mean-field"
    # `avi gaps RUN --family full-rank` also writes a file: alphabetically it comes first
    (run / "gaps-full-rank-test.json").write_text(json.dumps(_gaps("full-rank", 9.0, 9.0)))
    (run / "gaps-mean-field-test.json").write_text(json.dumps(_gaps("mean-field", 1.0, 2.0)))
    got = collect(run)
    assert (got["approximation_gap"], got["amortization_gap"]) == (1.0, 2.0)
    # a run without validation data has a NaN validation ELBO: never the best, wherever it stands
    runs = [{"val_elbo": float("nan")}, {"val_elbo": -90.0}, {"val_elbo": -95.0}]
    assert best_of(runs, "val_elbo", "max") == 1 and best_of(runs[::-1], "val_elbo", "max") == 1
    assert best_of(runs[:2], "val_elbo", "max") is None  # one finite value: nothing to compare
