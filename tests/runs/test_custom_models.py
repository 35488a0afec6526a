"""Models of one's own through every avi command, as docs/custom-models.md shows them: the
Poisson VAE of examples/poisson_vae.py by file path and a small one by module path
(tests/runs/custom_model_fixture.py) through fit, resume, evaluate, gaps, report, compare and a
2-process torchrun fit; the conv VAE of examples/conv_vae.py with its own encoder on MNIST; and
the one-line errors of a model that cannot be imported or built."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avi.runs.imports import import_object

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "custom-models.md"
#: the example files, named as the doc names them (relative to the repository root)
POISSON, CONV = "examples/poisson_vae.py", "examples/conv_vae.py"
MODULE_MODEL = "tests.runs.custom_model_fixture:SmallPoissonVAE"
TIMEOUT = 300

#: the settings of every small Poisson fit: 20-dimensional counts, batches of 50, one thread
SMALL = ("--epochs", "2", "--batch-size", "50", "--set", "train.threads=1")


def avi(*args: str, cwd: Path = ROOT, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """``python -m avi ARGS`` in a fresh interpreter, from the repository root by default (as a
    user runs the doc's commands; a module path imports from there), with ``env_vars`` set."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "avi", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def epochs_of(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def counts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 count vectors from the example's own generator, as the doc writes them."""
    synthetic_counts = import_object(f"{ROOT / POISSON}:synthetic_counts")
    path = tmp_path_factory.mktemp("data") / "counts.npy"
    np.save(path, synthetic_counts(n=300, data_dim=20, seed=1))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, counts: Path) -> dict[str, Path]:
    """The example Poisson VAE by (relative) file path, fitted for 2 epochs and resumed to 3; the
    fixture's model by module path, fitted for 2 epochs with its own latent size."""
    base = tmp_path_factory.mktemp("runs")
    file_run, module_run = base / "poisson-file", base / "poisson-module"
    ok(avi("fit", "--model", f"{POISSON}:PoissonVAE", "--data", str(counts), "--latent-dim", "2",
           "--set", "model.args.hidden=16", *SMALL, "--out", str(file_run)))  # fmt: skip
    ok(avi("fit", "--resume", str(file_run), "--epochs", "3"))
    ok(avi("fit", "--model", MODULE_MODEL, "--data", str(counts), "--set", "model.args.latent=3",
           *SMALL, "--out", str(module_run)))  # fmt: skip
    return {"file": file_run, "module": module_run}


def test_fit_records_the_import_paths_and_resume_continues(runs: dict[str, Path]) -> None:
    assert epochs_of(runs["file"]) == [1, 2, 3]
    assert json.loads((runs["file"] / "summary.json").read_text())["epochs_done"] == 3
    config = json.loads((runs["file"] / "config.json").read_text())
    # a file's path is recorded absolute, so the run loads from any working directory
    assert config["model"]["name"] == f"{ROOT / POISSON}:PoissonVAE"
    assert config["model"]["args"] == {"hidden": 16} and config["data"]["binarize"] == "none"
    module = json.loads((runs["module"] / "config.json").read_text())["model"]
    # the model's own latent size (its argument `latent`) sizes the posterior and is recorded
    assert module["name"] == MODULE_MODEL and module["latent_dim"] == 3
    state = torch.load(runs["module"] / "checkpoint.pt", weights_only=False)
    assert state["model"]["module.decoder.weight"].shape == (20, 3)


@pytest.mark.parametrize("which", ["file", "module"])
def test_evaluate_scores_counts_with_a_probability_mass_function(runs: dict[str, Path], which: str, tmp_path) -> None:
    """log p(x) of counts is a log probability, below 0; the IWAE estimate bounds it more tightly
    than the ELBO (up to Monte Carlo error). Run from another directory: the run finds its model
    by the file's absolute path, or by the module path on PYTHONPATH (as an installed package)."""
    found = {"PYTHONPATH": str(ROOT)} if which == "module" else {}
    result = json.loads(ok(avi("evaluate", str(runs[which]), "--k", "50", "--json", cwd=tmp_path, **found)).stdout)
    assert result["k"] == 50 and result["n"] == 30
    assert math.isfinite(result["elbo"]) and math.isfinite(result["log_likelihood"])
    assert result["log_likelihood"] < 0
    assert result["log_likelihood"] >= result["elbo"] - 1.0
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"], abs=1e-3)
    stored = json.loads((runs[which] / "evaluation-k50.json").read_text())
    assert stored["log_likelihood"] == pytest.approx(result["log_likelihood"])


def test_gaps_decomposes_the_inference_gap(runs: dict[str, Path]) -> None:
    result = json.loads(ok(avi("gaps", str(runs["file"]), "--points", "10", "--steps", "30", "--k", "50",
                               "--json")).stdout)  # fmt: skip
    assert result["n"] == 10 and result["log_likelihood_method"] == "iwae"
    gap = result["log_likelihood"] - result["elbo_amortized"]
    assert result["approximation_gap"] + result["amortization_gap"] == pytest.approx(gap, abs=1e-3)
    assert result["amortization_gap"] >= -3 * result["amortization_gap_stderr"]  # q* improves on the encoder
    assert (runs["file"] / "gaps-mean-field-test.json").is_file() and (runs["file"] / "gaps.png").is_file()


def test_report_of_count_data_has_curves_and_latents_but_no_images(runs: dict[str, Path]) -> None:
    page = Path(ok(avi("report", str(runs["file"]))).stdout.strip())
    assert page == runs["file"] / "report.html"
    text = page.read_text()
    assert "Training curves" in text and "Latent space" in text and "poisson_vae.py:PoissonVAE" in text
    assert (runs["file"] / "latent.png").is_file()
    assert not (runs["file"] / "reconstructions.png").exists()  # 20 counts are not an image


def test_compare_lists_both_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "compare"
    result = json.loads(ok(avi("compare", str(runs["file"]), str(runs["module"]), "--out", str(out), "--json")).stdout)
    assert [Path(r["run"]) for r in result["runs"]] == [runs["file"], runs["module"]]
    assert [r["model"] for r in result["runs"]] == [f"{ROOT / POISSON}:PoissonVAE", MODULE_MODEL]
    assert [r["epochs"] for r in result["runs"]] == [3, 2]
    best = result["best"]["val_elbo"]  # every run tied for best
    assert best and set(best) <= {str(runs["file"]), str(runs["module"])}
    assert list(out.iterdir())


def test_load_run_gives_the_users_model_back(runs: dict[str, Path]) -> None:
    """The doc's Python section: ``avi.load_run`` rebuilds a module-path run with its weights."""
    import avi
    from tests.runs.custom_model_fixture import SmallPoissonVAE

    run = avi.load_run(runs["module"])
    assert isinstance(run.model.module, SmallPoissonVAE) and run.model.latent_dim == 3
    assert [row["epoch"] for row in run.metrics] == [1, 2]
    state = torch.load(runs["module"] / "checkpoint.pt", weights_only=False)
    torch.testing.assert_close(run.model.module.decoder.weight, state["model"]["module.decoder.weight"])
    x = run.splits.test.x[:5]
    q = run.posterior(x)
    z = q.sample((10,))
    log_w = run.model.log_joint(x, z) - q.log_prob(z)
    assert log_w.shape == (10, 5) and torch.isfinite(log_w).all()


@pytest.mark.slow
def test_torchrun_fits_a_module_path_model_on_two_processes(counts: Path, tmp_path: Path) -> None:
    """Each process imports the model by its module path (from the working directory); rank 0
    alone writes the run and prints its directory."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AVI_DIST_TIMEOUT": "120"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "avi", "fit", "--model", MODULE_MODEL, "--data", str(counts), "--epochs", "1",
               "--batch-size", "50", "--set", "train.threads=1", "--out", str(run)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [str(run)]
    assert epochs_of(run) == [1]
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.slow
def test_conv_vae_with_its_own_encoder_fits_and_evaluates_mnist(tmp_path: Path) -> None:
    """One epoch on 200 MNIST images, binarised per batch; evaluated on 100 test images; the
    report draws reconstructions and prior samples, as the likelihood's mean is the image."""
    from avi.data.mnist import load_mnist

    test = tmp_path / "mnist-test-100.npy"
    np.save(test, load_mnist()["test"][0][:100].astype(np.float32) / 255)
    run = tmp_path / "conv"
    ok(avi("fit", "--model", f"{CONV}:ConvVAE", "--encoder", f"{CONV}:conv_encoder", "--set", "data.binarize=dynamic",
           "--latent-dim", "4", "--set", "model.args.channels=4", "--set", "inference.encoder_args.channels=4",
           "--subset", "200", "--set", "data.validation_fraction=0.005", "--epochs", "1", "--batch-size", "50",
           "--set", "train.threads=1", "--out", str(run)))  # fmt: skip
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["posterior"]["encoder.1.weight"].shape == (4, 1, 4, 4)  # the conv encoder, 4 channels
    result = json.loads(ok(avi("evaluate", str(run), "--data", str(test), "--k", "5", "--json")).stdout)
    assert result["n"] == 100 and len(result["kl_per_dim"]) == 4
    assert result["elbo"] - 1.0 <= result["log_likelihood"] < 0
    ok(avi("report", str(run)))
    assert (run / "reconstructions.png").is_file() and (run / "samples.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no_such_package.models:Model"], "importing no_such_package.models failed: ModuleNotFoundError"),
        (["--model", "/nonexistent/model.py:Model"], "cannot import /nonexistent/model.py: no such file"),
        (["--model", f"{POISSON}:PoisonVAE"], "has no attribute 'PoisonVAE'"),
        (["--model", f"{POISSON}:PoissonVAE", "--set", "model.args.widht=8"], "unexpected keyword argument 'widht'"),
        (["--model", MODULE_MODEL, "--encoder", "tests.runs.custom_model_fixture:failing_encoder"],
         "returned str, not a torch.nn.Module"),
        (["--model", f"{CONV}:ConvVAE"], "the conv VAE takes 28x28 images (784 values), not 20"),
    ],
)  # fmt: skip
def test_a_model_that_cannot_be_imported_or_built_is_one_line(counts: Path, args: list[str], message: str) -> None:
    result = avi("fit", *args, "--data", str(counts), "--epochs", "1", "--out", str(counts.parent / "never"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (counts.parent / "never").exists()


def test_the_doc_runs_the_example_files_the_tests_run() -> None:
    """Every ``FILE.py:Name`` and ``module:Name`` in docs/custom-models.md imports, and the doc's
    commands use the two example files (and their classes) that these tests fit."""
    text = DOC.read_text()
    paths = set(re.findall(r"\b((?:[\w.-]+/)*[\w-]+\.py):(\w+)", text))
    assert {(POISSON, "PoissonVAE"), (CONV, "ConvVAE"), (CONV, "conv_encoder")} <= paths
    for file, name in paths:
        if file.startswith("examples/"):
            assert callable(import_object(f"{ROOT / file}:{name}")), f"{file}:{name}"
    for command in ("avi fit", "--resume", "avi evaluate", "avi gaps", "avi report", "avi compare", "torchrun"):
        assert command in text, command


def test_a_relative_encoder_path_is_recorded_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the model's path is: the run's config.json must import the encoder from any directory."""
    from avi.runs.config import load_config

    monkeypatch.chdir(ROOT)
    config = load_config(None, {"model": {"name": f"{CONV}:ConvVAE"}, "inference": {"encoder": f"{CONV}:conv_encoder"}})
    assert config.model.name == f"{ROOT / CONV}:ConvVAE"
    assert config.inference.encoder == f"{ROOT / CONV}:conv_encoder"
