"""``train.diagnostics_every``: the collapse diagnostics every N epochs and at the run's last, the
training itself unchanged, and every reader of metrics.csv coping with the epochs without them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from avi.runs.config import Config, load_config
from avi.runs.hooks import EarlyStopping, Validation
from avi.runs.rundir import read_metrics
from avi.runs.train import run_fit

from .conftest import small_job


def _config(tmp_path: Path, every: int, epochs: int = 7) -> Config:
    path = tmp_path / f"every-{every}.toml"
    path.write_text(
        small_job(epochs, points=300).replace("threads = 1\n", f"threads = 1\ndiagnostics_every = {every}\n")
    )
    return load_config(path)


def _diagnosed_epochs(run: Path) -> list[int]:
    return [row["epoch"] for row in read_metrics(run) if row.get("active_units") is not None]


def test_every_third_epoch_and_the_last_with_the_same_training(avi_cli, tmp_path: Path) -> None:
    every = run_fit(_config(tmp_path, 1), tmp_path / "every")
    third = run_fit(_config(tmp_path, 3), tmp_path / "third")
    assert _diagnosed_epochs(every) == [1, 2, 3, 4, 5, 6, 7]
    assert _diagnosed_epochs(third) == [3, 6, 7]
    rows, thirds = read_metrics(every), read_metrics(third)
    # seeded diagnostics that restore the RNG: the same training numbers, bit for bit
    assert [r["train_elbo"] for r in thirds] == [r["train_elbo"] for r in rows]
    assert [r["val_elbo"] for r in thirds] == [r["val_elbo"] for r in rows]
    assert [thirds[e - 1]["kl_dim_0"] for e in (3, 6, 7)] == [rows[e - 1]["kl_dim_0"] for e in (3, 6, 7)]
    assert thirds[0]["kl_dim_0"] is None and thirds[0]["mutual_information"] is None  # blank cells
    assert (third / "collapse.png").is_file()

    report = avi_cli("report", str(third))
    assert report.returncode == 0, report.stderr
    assert "active units (validation, epoch 7)" in (third / "report.html").read_text()
    compared = avi_cli("compare", str(every), str(third), "--json", "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr
    by_run = {Path(r["run"]).name: r for r in json.loads(compared.stdout)["runs"]}
    assert by_run["third"]["active_units"] == rows[-1]["active_units"]

    resumed = avi_cli("fit", "--resume", str(third), "--epochs", "9", "--diagnostics-every", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert _diagnosed_epochs(third) == [3, 6, 7, 8, 9]
    assert json.loads((third / "config.json").read_text())["train"]["diagnostics_every"] == 2
    lines = [line for line in resumed.stderr.splitlines() if line.lstrip().startswith("epoch")]
    assert len(lines) == 2 and all("AU" in line for line in lines)


def test_zero_diagnoses_the_last_epoch_only(avi_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = tmp_path / "job.toml"
    path.write_text(small_job(3, points=300))
    result = avi_cli("fit", str(path), "--diagnostics-every", "0", "--out", str(run))
    assert result.returncode == 0, result.stderr
    assert _diagnosed_epochs(run) == [3]
    assert json.loads((run / "config.json").read_text())["train"]["diagnostics_every"] == 0
    lines = [line for line in result.stderr.splitlines() if line.lstrip().startswith("epoch")]
    assert ["AU" in line for line in lines] == [False, False, True]
    assert (run / "collapse.png").is_file()


def test_aggressive_epochs_always_record_the_mutual_information_their_rule_reads(tmp_path: Path) -> None:
    config = _config(tmp_path, 0, epochs=4)
    config.remedies.aggressive = True
    rows = read_metrics(run_fit(config, tmp_path / "run"))
    assert rows[0]["aggressive"] == 1
    assert _diagnosed_epochs(tmp_path / "run") == [r["epoch"] for r in rows if r["aggressive"] or r["epoch"] == 4]
    assert _diagnosed_epochs(tmp_path / "run") != [1, 2, 3, 4]  # the remedy ended: the epochs after it have none


def test_early_stopping_foretells_the_epoch_it_ends(tmp_path: Path) -> None:
    """Validation learns before the row is written whether early stopping ends the run there,
    so that the last epoch of a stopped run records the diagnostics."""
    stopping = EarlyStopping(2, tmp_path, Validation(None), [{"epoch": 1, "val_elbo": -2.0}])  # type: ignore[arg-type]
    for epoch, value, ends in ((2, -2.5, False), (3, -2.0, True), (4, -3.0, True)):
        state, record = SimpleNamespace(epoch=epoch), {"epoch": epoch, "val_elbo": value}
        assert stopping.stops(state, record) is ends  # type: ignore[arg-type]
        assert stopping.on_epoch(state, record) is ends  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-1", "1.5", "x"])
def test_bad_values_are_one_line(avi_cli, tmp_path: Path, value: str) -> None:
    run = tmp_path / "run"
    for args in (["--out", str(run)], ["--resume", str(tmp_path)]):
        result = avi_cli("fit", "--diagnostics-every", value, *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "--diagnostics-every" in lines[0] or "diagnostics_every" in lines[0], lines[0]
    assert not run.exists()
