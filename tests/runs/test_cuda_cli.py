"""``avi fit --device cuda`` and ``avi evaluate`` for every strategy, as a user runs them on a GPU
machine: training, per-epoch validation and diagnostics, and evaluation all on the GPU. Skipped
on machines without CUDA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("strategy", ["amortized", "per-datapoint", "semi-amortized", "iterative"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fit_and_evaluate_on_cuda(run_avi, small_config, tmp_path: Path, strategy: str, precision: str) -> None:
    run = tmp_path / f"{strategy}-{precision}"
    args = ["--device", "cuda", "--strategy", strategy, "--precision", precision, "--out", str(run)]
    fit = run_avi("fit", str(small_config(2)), *args)
    assert fit.returncode == 0, fit.stderr
    metrics = torch.load(run / "checkpoint.pt", weights_only=False)["metrics"]
    assert len(metrics) == 2 and all(math.isfinite(row["val_elbo"]) for row in metrics)
    evaluated = run_avi("evaluate", str(run), "--k", "50", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert math.isfinite(json.loads(evaluated.stdout)["log_likelihood"])
