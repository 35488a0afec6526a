"""Fixtures for run-level tests: a small synthetic job that trains in well under a second per epoch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SMALL_JOB = """
[model]
name = "vae"
latent_dim = 2
hidden = [16]
[data]
source = "synthetic"
synthetic_dim = 12
synthetic_points = 600
[train]
epochs = {epochs}
batch_size = 50
threads = 1
[evaluate]
k = 20
"""


@pytest.fixture
def small_config(tmp_path: Path):
    def make(epochs: int = 3) -> Path:
        path = tmp_path / f"small-{epochs}.toml"
        path.write_text(SMALL_JOB.format(epochs=epochs))
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
