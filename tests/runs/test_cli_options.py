"""The options of ``avi fit`` are one table: each flag reaches its config key, ``--set`` reaches any
key, and bad usage is one line with exit code 2."""

from __future__ import annotations

import importlib.metadata
import json
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from avi.cli import app
from avi.cli_options import FIT_FLAGS, Flag, changed_on_resume, overrides, parse_set
from avi.errors import ConfigError
from avi.runs.config import Config, load_config, merge_tables

#: a value of each flag type, as typed and as parsed
_SAMPLES: dict[type, tuple[str, Any]] = {
    int: ("3", 3),
    float: ("0.25", 0.25),
    str: ("some-name", "some-name"),
    list: ("256,128", [256, 128]),
}


def _fit_params(*argv: str) -> dict[str, Any]:
    """The parameters ``avi fit ARGV`` calls its function with, parsed without running it."""
    command = typer.main.get_command(app).commands["fit"]  # type: ignore[attr-defined]
    return command.make_context("fit", list(argv)).params


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("flag", FIT_FLAGS, ids=lambda flag: flag.option)
def test_every_flag_reaches_its_config_key(flag: Flag) -> None:
    text, value = _SAMPLES.get(flag.type, ("", True))
    argv = [flag.option] if flag.type is bool else [flag.option, text]
    section, field = flag.key.split(".")
    assert overrides(FIT_FLAGS, _fit_params(*argv)) == {section: {field: value}}
    assert overrides(FIT_FLAGS, _fit_params()) == {}


@pytest.mark.parametrize("flag", FIT_FLAGS, ids=lambda flag: flag.option)
def test_every_flag_names_a_config_field_of_its_type(flag: Flag) -> None:
    section, field = flag.key.split(".")
    fields = Config.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
    annotation = fields[field].annotation
    if typing.get_origin(annotation) is typing.Literal:
        assert {type(choice) for choice in typing.get_args(annotation)} == {flag.type}
    else:  # list[Width] | None: the flag's type is list
        assert flag.type in {typing.get_origin(a) or a for a in (annotation, *typing.get_args(annotation))}


def test_flags_are_unique_and_resume_takes_epochs_lr_schedule_diagnostics_compile_and_threads_only() -> None:
    assert len({flag.option for flag in FIT_FLAGS}) == len({flag.key for flag in FIT_FLAGS}) == len(FIT_FLAGS)
    every = _fit_params(*(arg for flag in FIT_FLAGS for arg in _argv(flag)))
    changed = changed_on_resume(FIT_FLAGS, every)
    resumable = ("--epochs", "--lr", "--lr-schedule", "--diagnostics-every", "--compile", "--threads")
    assert changed == [flag.option for flag in FIT_FLAGS if flag.option not in resumable]
    given = _fit_params(
        "--epochs", "4", "--lr", "0.1", "--lr-schedule", "cosine", "--diagnostics-every", "0", "--no-compile",
        "--threads", "2",
    )  # fmt: skip
    assert changed_on_resume(FIT_FLAGS, given) == []


def _argv(flag: Flag) -> list[str]:
    """The flag with a value of its type; one of its choices where the config field has choices
    (the resumable flags' values are checked)."""
    if flag.type is bool:
        return [flag.option]
    section, field = flag.key.split(".")
    annotation = Config.model_fields[section].annotation.model_fields[field].annotation  # type: ignore[union-attr]
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
    return [flag.option, str(choices[0]) if choices else _SAMPLES[flag.type][0]]


def test_boolean_flags_switch_on_and_no_compile_leaves_the_config() -> None:
    params = _fit_params("--weight-norm", "--straight-through", "--aggressive", "--compile")
    assert overrides(FIT_FLAGS, params) == {
        "inference": {"weight_norm": True},
        "objective": {"straight_through": True},
        "remedies": {"aggressive": True},
        "train": {"compile": True},
    }
    assert overrides(FIT_FLAGS, _fit_params("--no-compile")) == {}


def test_set_reaches_nested_keys_and_reads_toml_values() -> None:
    params = _fit_params("--set", "model.args.hidden=64", "--set", "model.hidden=[8, 4]", "--set", "a.b.c=true")
    parsed = parse_set(params["settings"])
    assert parsed == {"model": {"args": {"hidden": 64}, "hidden": [8, 4]}, "a": {"b": {"c": True}}}
    assert parse_set(["model.name=path/to/file.py:Model", "data.source='x.npy'", "train.lr=1e-4"]) == {
        "model": {"name": "path/to/file.py:Model"},
        "data": {"source": "x.npy"},
        "train": {"lr": 1e-4},
    }
    assert parse_set(["train.lr=1", "train.lr=2"]) == {"train": {"lr": 2}}  # the later wins
    flags = overrides(FIT_FLAGS, _fit_params("--latent-dim", "3", "--lr", "0.5"))
    assert merge_tables(flags, parse_set(["model.args.hidden=64", "train.lr=0.1"])) == {
        "model": {"latent_dim": 3, "args": {"hidden": 64}},
        "train": {"lr": 0.1},
    }


def test_set_fills_a_user_models_arguments() -> None:
    config = load_config(
        None, parse_set(["model.name=mypkg.models:MyModel", "model.args.hidden=[64]", "model.args.depth=2"])
    )
    assert config.model.name == "mypkg.models:MyModel" and config.model.args == {"hidden": [64], "depth": 2}


@pytest.mark.parametrize("item", ["model", "latent_dim=3", "model.=3", ".x=1", "=3", "model..x=1"])
def test_malformed_set_is_one_line(item: str) -> None:
    with pytest.raises(ConfigError, match="--set takes section.key=value") as err:
        parse_set([item])
    assert "\n" not in str(err.value)


def test_fit_writes_flags_and_set_values_into_config_json(run_avi, small_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--latent-dim", "3", "--lr", "0.002", "--seed", "7", "--weight-norm", "--objective", "iwae", "--k", "2"]
    sets = ["--set", "model.hidden=[8, 4]", "--set", "data.synthetic_points=300", "--set", "train.batch_size=25"]
    fitted = run_avi("fit", str(small_config(1)), *args, *sets, "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    assert fitted.stdout.strip() == str(run)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["latent_dim"] == 3 and config["model"]["hidden"] == [8, 4]
    assert config["train"]["lr"] == 0.002 and config["train"]["seed"] == 7 and config["train"]["batch_size"] == 25
    assert config["inference"]["weight_norm"] is True
    assert config["objective"]["name"] == "iwae" and config["objective"]["k"] == 2
    assert config["data"]["synthetic_points"] == 300


def test_usage_errors_are_one_line_with_exit_code_2(run_avi) -> None:
    assert "'--lr'" in _one_line(run_avi("fit", "--lr", "abc"))
    assert "--nope" in _one_line(run_avi("fit", "--nope"))
    assert "--set takes section.key=value" in _one_line(run_avi("fit", "--set", "latent_dim=3"))
    unknown = _one_line(run_avi("fit", "--set", "model.colour=red"))
    assert "unknown config key 'model.colour'" in unknown


def test_resume_names_each_flag_it_cannot_change(run_avi, tmp_path: Path) -> None:
    line = _one_line(run_avi("fit", "--resume", str(tmp_path), "--batch-size", "7", "--weight-norm", "--set", "a.b=1"))
    only = "(only --epochs, --lr, --lr-schedule, --diagnostics-every, --compile and --threads)"
    assert line.endswith(f"cannot change --weight-norm, --batch-size, --set {only}")


def test_version_and_bare_avi(run_avi) -> None:
    version = run_avi("--version")
    assert version.returncode == 0 and version.stdout == f"avi {importlib.metadata.version('avi')}\n"
    bare = run_avi()
    assert bare.returncode == 0, bare.stderr
    assert "Usage: avi" in bare.stdout and "fit" in bare.stdout and "evaluate" in bare.stdout


def test_interrupt_names_the_default_run_directory(small_config, tmp_path: Path) -> None:
    """Ctrl-C during ``avi fit`` without ``--out`` names the run directory it made, under ./runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "avi", "fit", str(small_config(200))],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob("runs/*/checkpoint.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    [run] = list((tmp_path / "runs").iterdir())
    assert proc.returncode == 130, stderr
    assert f"continue with avi fit --resume {Path('runs') / run.name}" in " ".join(stderr.split())


def test_set_merges_into_a_config_files_model_args(tmp_path) -> None:
    """``--set model.args.b=3`` changes that argument and keeps the file's other ``[model.args]``."""
    path = tmp_path / "user.toml"
    path.write_text('[model]\nname = "pkg.mod:Model"\n[model.args]\na = 1\nb = 2\n')
    config = load_config(path, parse_set(["model.args.b=3"]))
    assert config.model.args == {"a": 1, "b": 3}


@pytest.mark.parametrize(("args", "message"), [
    (["--free-bits", "inf"], "invalid value for remedies.free_bits: Input should be a finite number, got inf"),
    (["--lr", "nan"], "invalid value for train.lr: Input should be a finite number, got nan"),
    (["--set", "train.adam_eps=inf"], "invalid value for train.adam_eps: Input should be a finite number, got inf"),
    (["--set", "train.batch_size=true"], "train.batch_size: Input should be a valid integer, got true"),
    (["--set", "model.hidden=[64, false]"], "invalid value for model.hidden.1: Input should be a valid integer"),
    (["--seed", str(2**64)], "invalid value for train.seed: Input should be less than or equal to 9223372036854775807"),
    (["--threads", str(2**62)], "invalid value for train.threads: Input should be less than or equal to 4096"),
    (["--device", "meta"], "unknown device 'meta'; use cpu, cuda, cuda:N (N a GPU's index) or auto"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--hidden", "64,x"], "--hidden takes comma-separated layer widths such as 256,128, not '64,x'"),
    (["--encoder-hidden", "64,0"], "invalid value for inference.encoder_hidden.1: Input should be greater than 0"),
    (["--likelihood", "poisson"], "invalid value 'poisson' for model.likelihood: input should be 'bernoulli' or"),
    (["--standardize"], "data.standardize applies to data that are not binarised (data.binarize = 'none'), not"),
    (["--resume", "RUN", "--threads", "0"], "invalid value for --threads: Input should be greater than or equal to 1"),
    (["--resume", "RUN", "--epochs", "-1"], "invalid value for --epochs: Input should be greater than or equal to 0"),
])  # fmt: skip
def test_bad_values_of_flags_and_set_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "run"
    args = [str(tmp_path) if arg == "RUN" else arg for arg in args]
    result = CliRunner().invoke(app, ["fit", *args, *([] if "--resume" in args else ["--out", str(out)])])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.stderr, result.exception)
    assert message in lines[0] and not out.exists()


def test_a_config_directory_is_named_as_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fit", str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: config file {tmp_path} is a directory; give a TOML file"


def test_resume_checks_the_values_of_the_flags_it_takes() -> None:
    assert changed_on_resume(FIT_FLAGS, _fit_params("--threads", "4096", "--epochs", "0")) == []
    with pytest.raises(ConfigError, match=r"^invalid value for --threads: .* less than or equal to 4096, got 4097$"):
        changed_on_resume(FIT_FLAGS, _fit_params("--threads", "4097"))
