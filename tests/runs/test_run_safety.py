"""Run-directory safety: strict JSON, checkpoints that load tensors and plain values only (a
pickle payload executes nothing), and one process at a time per run directory."""

from __future__ import annotations

import builtins
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import avi.runs.train
from avi.errors import RunError
from avi.runs.config import load_config
from avi.runs.rundir import json_text, read_checkpoint, read_json, run_lock, write_checkpoint, write_json
from avi.runs.train import run_fit

PPCA_JOB = """
[model]
name = "ppca"
latent_dim = 2
[data]
source = "synthetic"
synthetic_dim = 6
synthetic_points = {points}
[train]
epochs = {epochs}
batch_size = 50
lr = 0.01
threads = 1
seed = {seed}
[evaluate]
k = 10
"""


def _job(tmp_path: Path, epochs: int = 1, seed: int = 0, points: int = 400) -> Path:
    path = tmp_path / f"ppca-{epochs}-{seed}-{points}.toml"
    path.write_text(PPCA_JOB.format(epochs=epochs, seed=seed, points=points))
    return path


def _one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


class Payload:
    """Unpickled, it creates ``marker`` (what a crafted checkpoint could do instead is anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return builtins.open, (str(self.marker), "w")


def test_json_text_writes_non_finite_numbers_as_null() -> None:
    obj = {
        "nan": math.nan,
        "inf": math.inf,
        "rows": [{"val": -math.inf, "ok": 1.5}, (np.float32("nan"), np.float64(2.0), np.int64(3))],
        "tensor": torch.tensor(float("nan")),
        "finite_tensor": torch.tensor(0.25),
        "flag": True,
        "text": "NaN",
    }
    text = json_text(obj, indent=2)
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    assert json.loads(text) == {
        "nan": None,
        "inf": None,
        "rows": [{"val": None, "ok": 1.5}, [None, 2.0, 3]],
        "tensor": None,
        "finite_tensor": 0.25,
        "flag": True,
        "text": "NaN",
    }


def test_write_json_output_parses_strictly(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_json(path, {"val_elbo": math.nan, "train_elbo": -1.0})

    def refuse(token: str) -> float:
        raise AssertionError(f"non-standard JSON token {token}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"val_elbo": None, "train_elbo": -1.0}
    assert read_json(path)["val_elbo"] is None


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small PPCA run of one epoch, fitted once for the module (tests copy it)."""
    tmp = tmp_path_factory.mktemp("fitted")
    return run_fit(load_config(_job(tmp)), tmp / "run")


def _poisoned_copy(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``run`` whose checkpoint also holds a :class:`Payload`; and the payload's marker."""
    copy, marker = tmp_path / "poisoned", tmp_path / "payload-ran"
    shutil.copytree(run, copy)
    state = torch.load(copy / "checkpoint.pt", weights_only=True)
    write_checkpoint(copy / "checkpoint.pt", {**state, "extra": Payload(marker)})
    return copy, marker


def test_the_payload_runs_under_a_plain_unpickler(fitted_run: Path, tmp_path: Path) -> None:
    """The control: the crafted checkpoint does run code when loaded with ``weights_only=False``."""
    copy, marker = _poisoned_copy(fitted_run, tmp_path)
    torch.load(copy / "checkpoint.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "command",
    [["evaluate", "{run}"], ["fit", "--resume", "{run}"], ["report", "{run}"], ["gaps", "{run}", "--steps", "5"]],
    ids=["evaluate", "resume", "report", "gaps"],
)
def test_a_pickle_payload_in_a_checkpoint_runs_nothing(run_avi, fitted_run: Path, tmp_path: Path, command) -> None:
    copy, marker = _poisoned_copy(fitted_run, tmp_path)
    result = run_avi(*[arg.format(run=copy) for arg in command])
    _one_line_error(result, "holds objects other than tensors and plain values; refusing to load it")
    assert not marker.exists()


def test_a_fitted_checkpoint_passes_the_schema(fitted_run: Path) -> None:
    state = read_checkpoint(fitted_run / "checkpoint.pt")
    assert state["epoch"] == 1 and len(state["metrics"]) == 1 and "torch_rng" in state


def _valid_state() -> dict:
    return {
        "model": {"w": torch.zeros(2)},
        "posterior": {},
        "optimizers": [],
        "generator": torch.Generator().get_state(),
        "epoch": 2,
        "metrics": [{"epoch": 1, "val_elbo": math.nan, "note": "x"}],
        "added_later": None,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": None}, "lacks 'model'"),
        ({"metrics": None}, "lacks 'metrics'"),
        ({"posterior": [torch.zeros(1)]}, "'posterior' is a list, not a dict"),
        ({"optimizers": {}}, "'optimizers' is a dict, not a list"),
        ({"generator": [1, 2]}, "'generator' is a list, not a tensor"),
        ({"epoch": 2.0}, "'epoch' is a float, not an integer"),
        ({"epoch": True}, "'epoch' is a bool, not an integer"),
        ({"metrics": "1,2"}, "'metrics' is a str, not a list"),
    ],
)
def test_schema_errors_are_one_line_naming_the_key(tmp_path: Path, change: dict, message: str) -> None:
    state = {**_valid_state(), **change}
    state = {key: value for key, value in state.items() if not (key in change and change[key] is None)}
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, state)
    with pytest.raises(RunError, match=message) as caught:
        read_checkpoint(path)
    assert len(str(caught.value).splitlines()) == 1


def test_a_checkpoint_that_is_not_a_dict_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, [_valid_state()])  # type: ignore[arg-type]
    with pytest.raises(RunError, match="holds a list, not a dict of run state"):
        read_checkpoint(path)
    write_checkpoint(path, _valid_state())
    assert read_checkpoint(path)["added_later"] is None  # extra keys are allowed


@pytest.mark.parametrize("damage", ["truncated", "text", "empty", "pickle"])
def test_a_truncated_or_foreign_checkpoint_is_one_line(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, _valid_state())
    whole = path.read_bytes()
    content = {
        "truncated": whole[: len(whole) // 2],
        "text": b"epoch,train_elbo\n1,-3.5\n",
        "empty": b"",
        "pickle": pickle.dumps(Payload(tmp_path / "ran")),
    }[damage]
    path.write_bytes(content)
    with pytest.raises(RunError, match="it is truncated or not a checkpoint") as caught:
        read_checkpoint(path)
    assert len(str(caught.value).splitlines()) == 1
    assert not (tmp_path / "ran").exists()


def test_a_held_run_directory_refuses_a_second_fit(tmp_path: Path) -> None:
    """While another process (here: another open file of this one) holds the lock, a new fit into
    the directory writes nothing and a resumed one does not start; released, both go ahead."""
    run = tmp_path / "run"
    run.mkdir()
    config = load_config(_job(tmp_path))
    with run_lock(run):
        assert (run / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            RunError, match=rf"^run directory {run} is in use by another avi process \(pid {os.getpid()}\)"
        ):
            run_fit(config, run)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # no config.json, no summary
    run_fit(config, run)
    with run_lock(run), pytest.raises(RunError, match="in use by another avi process"):
        run_fit(resume=True, run_dir=run, epochs=2)
    assert read_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert (run / ".lock").read_text() == ""  # released: no stale pid
    run_fit(resume=True, run_dir=run, epochs=2)
    assert read_checkpoint(run / "checkpoint.pt")["epoch"] == 2


def test_a_fit_into_a_finished_run_fails_after_taking_the_lock(tmp_path: Path, monkeypatch) -> None:
    """A racing fit that finished while this one was building: the check after the lock catches it."""
    run = run_fit(load_config(_job(tmp_path)), tmp_path / "run")
    config_text = (run / "config.json").read_text()
    check = avi.runs.train.require_new_run
    monkeypatch.setattr(avi.runs.train, "require_new_run", _checks_second_time_only(check))
    with pytest.raises(RunError, match="already holds a run"):
        run_fit(load_config(_job(tmp_path, seed=5)), run)
    assert (run / "config.json").read_text() == config_text


def _checks_second_time_only(check):
    calls = []

    def second(run_dir: Path) -> None:
        calls.append(run_dir)
        if len(calls) > 1:
            check(run_dir)

    return second


def _fit_process(config: Path, run: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "avi", "fit", str(config), "--out", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("trial", range(5))
def test_two_racing_fits_into_one_directory(tmp_path: Path, trial: int) -> None:
    """Two ``avi fit --out D`` started together: one trains, the other exits 2 with one line
    (the directory is in use, or already holds the first's finished run), and the directory is
    the survivor's run throughout (its config, its checkpoint, its metrics)."""
    run = tmp_path / "run"
    configs = {seed: _job(tmp_path, epochs=3 + seed, seed=seed, points=2000) for seed in (1, 2)}
    processes = {seed: _fit_process(config, run) for seed, config in configs.items()}
    errors = {seed: proc.communicate(timeout=300)[1] for seed, proc in processes.items()}
    results = {seed: (processes[seed].returncode, err) for seed, err in errors.items()}
    codes = sorted(code for code, _ in results.values())
    assert codes == [0, 2], results
    winner = next(seed for seed, (code, _) in results.items() if code == 0)
    loser_err = next(err for code, err in results.values() if code == 2)
    lines = [line for line in loser_err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in loser_err, loser_err
    assert "in use by another avi process" in lines[0] or "already holds a run" in lines[0], loser_err
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == winner
    state = read_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 3 + winner and [row["epoch"] for row in state["metrics"]] == list(range(1, 4 + winner))
    assert read_json(run / "summary.json")["status"] == "finished"
