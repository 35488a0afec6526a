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


def test_resumed_per_datapoint_run_equals_an_uninterrupted_one(run_avi, small_config, tmp_path: Path) -> None:
    """Two epochs in one go, and one epoch then ``--resume`` for the second: the resumed run
    restores its validation table on the GPU and the GPU's random stream, so the weights agree."""
    args = ["--device", "cuda", "--strategy", "per-datapoint"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run_avi("fit", str(small_config(2)), *args, "--out", str(whole)).returncode == 0
    assert run_avi("fit", str(small_config(1)), *args, "--out", str(split)).returncode == 0
    resumed = run_avi("fit", "--resume", str(split), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = (torch.load(run / "checkpoint.pt", weights_only=False) for run in (split, whole))
    for part in ("model", "posterior"):
        for name, value in theirs[part].items():
            torch.testing.assert_close(ours[part][name], value, msg=f"{part}.{name}")
    torch.testing.assert_close(ours["validation_params"], theirs["validation_params"])


def test_linear_probe_on_gpu_features() -> None:
    """``avi evaluate --consistency`` fits its probe on features where the encoder left them."""
    from avi.evaluation.consistency import linear_probe_accuracy

    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(3, 5, generator=g)
    labels = torch.randint(0, 3, (600,), generator=g)
    features = (centres[labels] + torch.randn(600, 5, generator=g)).cuda()
    labels = labels.cuda()
    assert linear_probe_accuracy(features[:400], labels[:400], features[400:], labels[400:]) > 0.97


def test_a_gpu_this_machine_lacks_is_one_line(run_avi, small_config, tmp_path: Path) -> None:
    missing = f"cuda:{torch.cuda.device_count()}"
    result = run_avi("fit", str(small_config(1)), "--device", missing, "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: device {missing!r} requested but this machine has {torch.cuda.device_count()} CUDA GPU(s)"]
