"""Fixtures for run-level tests: a small synthetic job that trains in well under a second per epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from click.testing import CliRunner

_SMALL_JOB = """
[model]
{model}
hidden = [16]
[data]
source = "synthetic"
synthetic_dim = 12
synthetic_points = {points}
[train]
epochs = {epochs}
batch_size = 50
threads = 1
[evaluate]
k = 20
"""


def small_job(epochs: int = 3, points: int = 600, **model: str | int) -> str:
    """The TOML of a small synthetic job: a VAE with 2 latents unless ``model`` sets other fields."""
    fields = {"name": "vae", "latent_dim": 2, **model}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in fields.items())
    return _SMALL_JOB.format(model=lines, points=points, epochs=epochs)


@pytest.fixture
def small_config(tmp_path: Path):
    def make(epochs: int = 3) -> Path:
        path = tmp_path / f"small-{epochs}.toml"
        path.write_text(small_job(epochs))
        return path

    return make


def _run_avi(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "avi", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture
def run_avi():
    """Run the CLI as a user would, in a fresh interpreter: ``run_avi(*args)``."""
    return _run_avi


def avi_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``avi ARGS`` through :func:`avi.cli.main`, the script itself (so a usage error is its one
    line, not typer's usage box), in this process: its exit code and its standard output and error
    apart, as :func:`_run_avi` gives them. The process's threads, which the command sets, and its
    random state are kept."""
    from avi.cli import main

    code: int | str | None = None
    threads = torch.get_num_threads()
    with (
        CliRunner().isolation() as (stdout, stderr, _),
        mock.patch.object(sys, "argv", ["avi", *args]),
        torch.random.fork_rng(devices=[]),
    ):
        try:
            main()
        except SystemExit as exit:
            code = exit.code
        finally:
            torch.set_num_threads(threads)
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
    assert code is None or isinstance(code, int), code
    return subprocess.CompletedProcess(["avi", *args], code or 0, out, err)


@pytest.fixture
def avi_cli():
    """Run the CLI in this process, without the 2 s (5-8 s on a loaded machine) of a fresh
    interpreter's imports: ``avi_cli(*args)``, a ``CompletedProcess`` as :func:`run_avi`'s. For
    what only a process of its own shows (signals, torchrun, what the interpreter prints at
    exit), use ``run_avi``."""
    return avi_in_process
