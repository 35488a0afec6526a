"""Run controls of ``avi fit`` and ``avi evaluate``: early stopping from the command line, which
checkpoint an evaluation scores, the learning-rate schedule on resume, whether the validation
bound was still improving or the training objective got worse, and a resumed run with nothing
left to train. In-process (typer's CliRunner) on the small synthetic job."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from avi.cli import app
from avi.errors import ConfigError
from avi.runs import train as train_module
from avi.runs.config import TrainConfig, learning_rate, load_config
from avi.runs.rundir import best_evaluation, read_checkpoint, read_config, read_metrics
from avi.runs.train import run_fit, stopped_early, train_objective_worsened, val_elbo_improving

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
    # three epochs, each better than the last: the bound was still improving, and fit says so on one line
    assert summary["best_epoch"] == 3 and summary["val_elbo_improving"] is True
    hint = f"the validation bound was still improving: more epochs may help (avi fit --resume {run} --epochs M, M > 3)"
    assert hint in fitted.stderr.splitlines()
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
    fitted = _avi("fit", _job(tmp_path, epochs=60), *args)
    assert fitted.exit_code == 0, (fitted.stderr, fitted.exception)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] < summary["epochs_done"] < 60
    assert summary["val_elbo_improving"] is False and "still improving" not in fitted.stderr  # early stopping ended it
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


def test_a_cosine_run_extended_on_resume_decays_to_its_new_end(tmp_path: Path) -> None:
    """Extended from 2 to 4 epochs, the cosine re-spans 4 epochs (recorded in config.json) from
    epoch 3 on, instead of running past its old end, where its rate was 0 and would rise again;
    a run trained in parts (``run_fit(epochs=...)`` below ``train.epochs``) keeps its span."""
    run, parts = tmp_path / "run", tmp_path / "parts"
    job = _job(tmp_path, epochs=2)
    assert _avi("fit", job, "--lr-schedule", "cosine", "--out", str(run)).exit_code == 0
    resumed = _avi("fit", "--resume", str(run), "--epochs", "4")
    assert resumed.exit_code == 0, (resumed.stderr, resumed.exception)
    two, four = TrainConfig(lr_schedule="cosine", epochs=2), TrainConfig(lr_schedule="cosine", epochs=4)
    expected = [learning_rate(two, 1), learning_rate(two, 2), learning_rate(four, 3), learning_rate(four, 4)]
    assert [row["lr"] for row in read_metrics(run)] == pytest.approx(expected)
    assert expected[2] == pytest.approx(1e-3 / 2)  # halfway through the new span, not 0
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 4
    config = load_config(Path(_job(tmp_path, epochs=4)), {"train": {"lr_schedule": "cosine"}})
    run_fit(config, parts, epochs=1)  # in parts, from Python
    run_fit(None, parts, resume=True, epochs=3)
    assert [row["lr"] for row in read_metrics(parts)] == pytest.approx([learning_rate(four, e) for e in (1, 2, 3)])
    assert json.loads((parts / "config.json").read_text())["train"]["epochs"] == 4


def _rows(*values: float) -> list[dict[str, Any]]:
    return [{"epoch": epoch, "val_elbo": value} for epoch, value in enumerate(values, 1)]


def test_still_improving_compares_the_last_epochs_best_with_the_best_before() -> None:
    train = TrainConfig()  # lr_tolerance 1e-4: a rise of more than 1e-4 x |best before| counts
    rising = [-100.0 + epoch for epoch in range(20)]
    assert val_elbo_improving(_rows(*rising), train) is True
    # the last 5 epochs (at least 5; 10% of 60 is 6) never beat epoch 10's -90
    assert val_elbo_improving(_rows(*rising[:11], *[-95.0] * 49), train) is False
    assert val_elbo_improving(_rows(*rising[:11], *[-95.0] * 48, -89.5), train) is True
    assert val_elbo_improving(_rows(-100.0, -99.995), train) is False  # within the tolerance
    assert val_elbo_improving(_rows(-100.0, -99.98), train) is True  # one epoch before the window of 1
    # with early stopping the window is its patience: a best 3 epochs ago has stopped patience 3, not 4
    peaked = _rows(*rising[:10], -91.0, -92.0, -93.0)
    assert val_elbo_improving(peaked, TrainConfig(early_stop=3)) is False
    assert val_elbo_improving(peaked, TrainConfig(early_stop=4)) is True
    assert val_elbo_improving(_rows(math.nan, math.nan, math.nan), train) is None  # no validation split
    assert val_elbo_improving(_rows(-100.0), train) is None


def test_resuming_a_finished_run_says_how_to_train_on(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _avi("fit", _job(tmp_path, epochs=1), "--out", str(run)).exit_code == 0
    before = (run / "checkpoint.pt").read_bytes()
    for argv in ([], ["--epochs", "1"]):
        again = _avi("fit", "--resume", str(run), *argv)
        assert again.exit_code == 0, (again.stderr, again.exception)
        assert again.stderr.splitlines() == [f"{run} has finished its 1 epoch; add --epochs M (M > 1) to train on"]
        assert again.stdout == f"{run}\n"
    assert (run / "checkpoint.pt").read_bytes() == before and len(read_metrics(run)) == 1
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    trained_on = _avi("fit", "--resume", str(run), "--epochs", "2")
    assert trained_on.exit_code == 0 and "has finished" not in trained_on.stderr and len(read_metrics(run)) == 2


def test_resuming_a_run_its_stopping_rule_ended_trains_only_with_a_new_rate(tmp_path: Path) -> None:
    """Early stopping ended it before its epochs: a plain resume (or one with more epochs)
    trains nothing and says why and how to go on; a new learning rate trains on."""
    run = tmp_path / "run"
    stopped = run_fit(load_config(Path(_job(tmp_path, epochs=40)), {"train": {"early_stop": 1, "lr": 0.3}}), run)
    summary = json.loads((run / "summary.json").read_text())
    done = summary["epochs_done"]
    assert summary["status"] == "finished" and done < 40 and stopped_early(stopped)
    before = (run / "checkpoint.pt").read_bytes()
    for argv in ([], ["--epochs", "50"]):
        again = _avi("fit", "--resume", str(run), *argv)
        assert again.exit_code == 0, (again.stderr, again.exception)
        expected = f"{run} stopped at epoch {done} (early stopping; best epoch {summary['best_epoch']}); "
        assert again.stderr.splitlines() == [expected + "give --lr or --lr-schedule to train on"]
    assert (run / "checkpoint.pt").read_bytes() == before and len(read_metrics(run)) == done
    alone = _avi("fit", "--resume", str(run), "--diagnostics-every", "2")  # would train nothing: refused
    assert alone.exit_code == 2 and "a new train.diagnostics_every alone changes nothing" in alone.stderr
    assert len(alone.stderr.splitlines()) == 1 and read_config(run).train.diagnostics_every != 2
    assert (run / "checkpoint.pt").read_bytes() == before and len(read_metrics(run)) == done
    assert _avi("fit", "--resume", str(run), "--lr", "0.001").exit_code == 0
    assert len(read_metrics(run)) > done


def _objectives(*values: float, kl_weight: float = 1.0) -> list[dict[str, Any]]:
    return [{"epoch": e, "train_objective": value, "kl_weight": kl_weight} for e, value in enumerate(values, 1)]


def test_a_worsening_training_objective_is_told_from_noise() -> None:
    """Windows of W = max(5, 10%) epochs, means compared with three standard errors: a bound that
    climbs and then sinks by a nat is flagged, one that levels off in noise of 0.3 nats (seeded,
    every length from 10 epochs to 200) is not, nor one still climbing; epochs of a KL warm-up
    (another weight) do not count, and under 2 W comparable epochs there is no verdict."""
    train = TrainConfig()
    climb = [-120.0 + 20 * (1 - math.exp(-epoch / 10)) for epoch in range(60)]
    assert train_objective_worsened(_objectives(*climb), train) is False
    sinks = [*climb, *[climb[-1] - 0.02 * epoch for epoch in range(1, 61)]]  # 1.2 nats lost over 60 epochs
    assert train_objective_worsened(_objectives(*sinks), train) is True
    generator = torch.Generator().manual_seed(0)
    noise = (0.3 * torch.randn(200, generator=generator)).tolist()
    level = [*climb, *[-100.0 + e for e in noise]]
    assert not any(train_objective_worsened(_objectives(*level[:n]), train) for n in range(10, len(level) + 1))
    warm = _objectives(*[-90.0 + e for e in noise[:20]], kl_weight=0.5)  # a down-weighted KL scores higher
    assert train_objective_worsened([*warm, *_objectives(*level[60:100])], train) is False
    assert train_objective_worsened([*warm, *_objectives(*level[60:69])], train) is None  # 9 < 2 x 5
    assert train_objective_worsened(_objectives(*sinks[:-1], math.nan), train) is None  # after a NaN: none
    assert train_objective_worsened([], train) is None


def test_avi_fit_says_when_the_training_objective_got_worse(tmp_path: Path, monkeypatch) -> None:
    """The verdict lands in summary.json as ``train_objective_worsened`` and, where it is True,
    as one line of ``avi fit``'s closing lines naming the learning rate."""
    run = tmp_path / "run"
    fitted = _avi("fit", _job(tmp_path), "--out", str(run))
    assert json.loads((run / "summary.json").read_text())["train_objective_worsened"] is None  # 3 epochs
    assert "got worse" not in fitted.stderr
    monkeypatch.setattr(train_module, "train_objective_worsened", lambda rows, train: True)
    worse = _avi("fit", _job(tmp_path), "--out", str(tmp_path / "worse"))
    assert json.loads((tmp_path / "worse" / "summary.json").read_text())["train_objective_worsened"] is True
    assert [line for line in worse.stderr.splitlines() if "got worse" in line] == [
        "the training objective got worse over the run (its mean over the last epochs is below an earlier "
        "one's): the learning rate (train.lr) may be too high; see metrics.csv"
    ]
