"""Fixtures for run-level tests: a small synthetic job that trains in well under a second per epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
