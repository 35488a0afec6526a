"""``avi fit`` / ``avi evaluate`` on models with discrete latents (discrete-vae, sbn): each
discrete estimator trains, NVIL's baseline network is trained and checkpointed, and bad
combinations are one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.runs.conftest import small_job


@pytest.fixture
def discrete_config(tmp_path: Path):
    def make(model: str = "discrete-vae", epochs: int = 1) -> Path:
        path = tmp_path / f"{model}-{epochs}.toml"
        classes = {"num_classes": 4} if model == "discrete-vae" else {}  # sbn latents are binary
        path.write_text(small_job(epochs, points=300, name=model, latent_dim=3, **classes))
        return path

    return make


@pytest.mark.parametrize(
    ("model", "args", "estimator"),
    [
        ("discrete-vae", [], "gumbel"),  # the default estimator of a discrete model
        ("discrete-vae", ["--estimator", "gumbel", "--straight-through", "--temperature", "0.5"], "gumbel"),
        ("discrete-vae", ["--estimator", "score"], "score"),
        ("discrete-vae", ["--estimator", "score-baseline"], "score-baseline"),
        ("discrete-vae", ["--objective", "iwae", "--k", "3"], "vimco"),
        ("sbn", ["--estimator", "nvil"], "nvil"),
        ("sbn", ["--estimator", "gumbel"], "gumbel"),
        ("sbn", ["--objective", "rws", "--k", "3"], "reparam"),  # rws draws z with q.sample: any family
    ],
)
def test_discrete_models_train_and_evaluate(
    run_avi, discrete_config, tmp_path: Path, model: str, args: list[str], estimator: str
) -> None:
    run = tmp_path / "run"
    result = run_avi("fit", str(discrete_config(model)), "--out", str(run), *args)
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["objective"]["estimator"] == estimator
    assert config["inference"]["family"] == {"discrete-vae": "categorical", "sbn": "bernoulli"}[model]
    evaluated = run_avi("evaluate", str(run), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    # IWAE with k = 20 samples of the discrete q: at least the ELBO (up to noise), at most 0
    # (a probability of binary data)
    assert 0 > metrics["log_likelihood"] > metrics["elbo"] - 1.0
    assert len(metrics["kl_per_dim"]) == 3  # one KL per categorical variable or binary unit


def test_nvil_baseline_is_trained_resumes_exactly_and_reports(run_avi, discrete_config, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    config = discrete_config("discrete-vae", epochs=2)
    assert run_avi("fit", str(config), "--out", str(straight), "--estimator", "nvil").returncode == 0
    first = run_avi("fit", str(config), "--out", str(split), "--estimator", "nvil", "--epochs", "1")
    assert first.returncode == 0, first.stderr
    resumed = run_avi("fit", "--resume", str(split), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert set(a["baseline"]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "centre.value"}
    # the baseline network has its own Adam, which has stepped with the model's on every batch
    assert len(a["optimizers"]) == 2
    model_steps = {s["step"].item() for s in a["optimizers"][0]["state"].values()}
    baseline_steps = {s["step"].item() for s in a["optimizers"][1]["state"].values()}
    assert len(a["optimizers"][1]["state"]) == 4 and baseline_steps == model_steps and min(model_steps) > 0
    for name, value in a["baseline"].items():  # resumed = uninterrupted, baseline included
        torch.testing.assert_close(b["baseline"][name], value, atol=0, rtol=0)
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, atol=0, rtol=0)
    report = run_avi("report", str(straight))  # figures of a categorical q: latent view of the flat one-hot means
    assert report.returncode == 0, report.stderr
    assert (straight / "latent.png").exists() and (straight / "report.html").exists()
    gaps = run_avi("gaps", str(straight), "--points", "5")  # refinement is by gradient steps on a continuous q
    assert gaps.returncode == 2 and "has discrete latents" in gaps.stderr and len(gaps.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [
        ("discrete-vae", ["--estimator", "reparam"], "reparameterised estimator asked for a discrete family"),
        ("sbn", ["--estimator", "stl"], "reparameterised estimator asked for a discrete family"),
        ("discrete-vae", ["--objective", "iwae", "--estimator", "dreg"], "reparameterised estimator asked for a discrete family"),
        ("discrete-vae", ["--objective", "renyi"], "reparameterised estimator asked for a discrete family"),
        ("discrete-vae", ["--temperature", "0"], "objective.temperature: Input should be greater than 0, got 0.0"),
        ("sbn", ["--estimator", "gumbel", "--temperature", "-1"], "objective.temperature: Input should be greater than 0, got -1.0"),
        ("discrete-vae", ["--estimator", "magic"], "invalid value 'magic' for objective.estimator"),
        ("discrete-vae", ["--family", "mean-field"], "inference.family must be 'categorical'"),
        ("discrete-vae", ["--strategy", "per-datapoint"], "trains an amortized posterior"),
        ("discrete-vae", ["--beta", "0.5"], "do not combine with estimator 'gumbel'"),
        ("vae", ["--estimator", "gumbel"], "gumbel estimator needs a model with discrete latents"),
        ("vae", ["--family", "categorical"], "is for a model with discrete latents"),
        ("sbn", ["--estimator", "nvil", "--temperature", "0.5"], "belong to the gumbel estimator, not 'nvil'"),
        ("discrete-vae", ["--estimator", "score", "--straight-through"], "belong to the gumbel estimator, not 'score'"),
    ],
)
def test_bad_discrete_input_is_one_line_with_exit_code_2(
    run_avi, discrete_config, model: str, args: list[str], message: str
) -> None:
    result = run_avi("fit", str(discrete_config(model)), *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
