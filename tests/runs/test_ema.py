"""``train.ema_decay``: the weights' moving average validated, checkpointed beside the raw
weights (a resume continues bit for bit), kept in best.pt and loaded for evaluation; training
itself unchanged; a bad decay one line naming the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from avi.errors import ConfigError, RunError
from avi.runs.config import Config, load_config
from avi.runs.load import load_trained
from avi.runs.rundir import BEST, CHECKPOINT, read_checkpoint, read_metrics, write_checkpoint
from avi.runs.train import run_fit

from .conftest import small_job


def _config(tmp_path: Path, **train: Any) -> Config:
    path = tmp_path / "job.toml"
    path.write_text(small_job(4, points=300))
    return load_config(path, {"train": train})


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def _holds(state: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds the (non-empty) ``weights`` under their names."""
    return bool(weights) and all(torch.equal(state[name], value) for name, value in weights.items())


def test_a_resumed_run_continues_its_average_bit_for_bit_and_training_is_unchanged(tmp_path: Path) -> None:
    straight = run_fit(_config(tmp_path, ema_decay=0.9), tmp_path / "straight")
    parts = run_fit(_config(tmp_path, ema_decay=0.9), tmp_path / "parts", epochs=2)
    run_fit(None, parts, resume=True, epochs=4)
    whole, resumed = read_checkpoint(straight / CHECKPOINT), read_checkpoint(parts / CHECKPOINT)
    for key in ("model", "posterior"):
        assert _same(whole[key], resumed[key])  # the raw training state
        assert _same(whole["averaged"][key], resumed["averaged"][key])
    assert whole["averaged"]["updates"] == resumed["averaged"]["updates"] == whole["step"] > 4
    assert all(not torch.equal(value, whole["model"][name]) for name, value in whole["averaged"]["model"].items())
    assert [r["val_elbo"] for r in read_metrics(straight)] == [r["val_elbo"] for r in read_metrics(parts)]

    plain = run_fit(_config(tmp_path), tmp_path / "plain")
    rows, averaged_rows = read_metrics(plain), read_metrics(straight)
    assert read_checkpoint(plain / CHECKPOINT)["averaged"] is None
    # validating on the averaged weights leaves training as it was, bit for bit; validation differs
    assert [r["train_elbo"] for r in averaged_rows] == [r["train_elbo"] for r in rows]
    assert _same(read_checkpoint(plain / CHECKPOINT)["model"], whole["model"])
    assert all(a["val_elbo"] != b["val_elbo"] for a, b in zip(averaged_rows, rows, strict=True))


def test_evaluation_and_best_pt_use_the_averaged_weights(avi_cli, tmp_path: Path) -> None:
    run = run_fit(_config(tmp_path, ema_decay=0.5, early_stop=10), tmp_path / "run")
    saved = read_checkpoint(run / CHECKPOINT)
    loaded = load_trained(run)
    model, posterior = loaded.model.state_dict(), loaded.posterior.state_dict()
    assert _holds(model, saved["averaged"]["model"]) and _holds(posterior, saved["averaged"]["posterior"])
    assert not _holds(model, {name: saved["model"][name] for name in saved["averaged"]["model"]})
    assert torch.equal(model["prior_scale"], saved["model"]["prior_scale"])  # a buffer: the raw one

    best = read_checkpoint(run / BEST)
    best_epoch = json.loads((run / "summary.json").read_text())["best_epoch"]
    assert (
        best["epoch"] == best_epoch and best["averaged"]["updates"] == best["step"] == best_epoch * saved["step"] // 4
    )
    assert _holds(load_trained(run, checkpoint="best").model.state_dict(), best["averaged"]["model"])

    raw = tmp_path / "raw"  # the same run without its average: the raw weights evaluated
    shutil.copytree(run, raw)
    write_checkpoint(raw / CHECKPOINT, {**saved, "averaged": None})
    scores = []
    for path in (run, raw, run):
        result = avi_cli("evaluate", str(path), "--k", "5", "--json")
        assert result.returncode == 0, result.stderr
        scores.append(json.loads(result.stdout)["log_likelihood"])
    assert scores[0] == scores[2] != scores[1]  # seeded per point: the weights make the difference


@pytest.mark.parametrize("value", [0, 1, -0.5, "abc", 1.5])
def test_a_bad_decay_is_one_line_naming_the_key(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^invalid value for train.ema_decay: [^\n]*$"):
        _config(tmp_path, ema_decay=value)


def test_the_flag_sets_the_decay_and_a_resume_keeps_it(avi_cli, tmp_path: Path) -> None:
    path, run = tmp_path / "job.toml", tmp_path / "run"
    path.write_text(small_job(1, points=300))
    bad = avi_cli("fit", str(path), "--ema-decay", "1", "--out", str(run))
    assert (bad.returncode, bad.stderr) == (
        2,
        "error: invalid value for train.ema_decay: Input should be less than 1, got 1.0\n",
    )
    done = avi_cli("fit", str(path), "--ema-decay", "0.99", "--out", str(run))
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "config.json").read_text())["train"]["ema_decay"] == 0.99
    refused = avi_cli("fit", "--resume", str(run), "--ema-decay", "0.9")
    assert refused.returncode == 2 and "--ema-decay" in refused.stderr


def test_a_checkpoint_without_the_average_of_its_config_is_one_line(tmp_path: Path) -> None:
    run = run_fit(_config(tmp_path, epochs=1), tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["train"]["ema_decay"] = 0.9
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=r"^checkpoint of .* does not match its config: it holds no averaged weights"):
        run_fit(None, run, resume=True, epochs=2)
