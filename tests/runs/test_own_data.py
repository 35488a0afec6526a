"""A user's own continuous data from the command line: a Gaussian likelihood that starts at the
data's moments, widths scaled to the data's dimension, standardisation by the training split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avi.cli import app
from avi.errors import DataError
from avi.models import LinearGaussian, VAEModel
from avi.runs.build import build_model, build_posterior, default_hidden, load_splits, prepare_data
from avi.runs.config import load_config, resolve_config
from avi.runs.load import load_run
from avi.runs.rundir import read_metrics


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's 8x8 digits (bundled with it), 1,797 images of 64 pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    path = tmp_path_factory.mktemp("digits") / "digits.npy"
    np.save(path, (load_digits().data / 16).astype(np.float32))
    return path


def test_a_gaussian_vae_with_defaults_fits_the_8x8_digits(digits: Path, tmp_path: Path) -> None:
    """The issue's case: with sigma at its old start (0.69) the posterior collapsed, every
    reconstruction near the mean image (MSE 0.064-0.072 against 0.073 after 20 epochs); started
    at the data's moments 0.021-0.022 against 0.073 (seeds 0-2), all 20 units active. Half the
    mean image's error separates the two."""
    run = tmp_path / "run"
    argv = ["fit", "--data", str(digits), "--likelihood", "gaussian", "--epochs", "20", "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, [*argv, "--out", str(run)])
    finally:  # --threads sets the whole process's: leave the other tests theirs
        torch.set_num_threads(threads)
    assert result.exit_code == 0, (result.stderr, result.exception)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hidden"] == [256] and config["model"]["latent_dim"] == 20  # 4 x 64 units, recorded
    assert int(read_metrics(run)[-1]["active_units"]) > 10
    loaded = load_run(run)
    x = loaded.splits.test.x
    with torch.no_grad():
        z = loaded.posterior(x, torch.arange(len(x))).mean
        reconstruction = loaded.model.likelihood(z).mean
    error = ((reconstruction - x) ** 2).mean().item()
    mean_image_error = ((x - x.mean(0)) ** 2).mean().item()
    assert error < 0.5 * mean_image_error, (error, mean_image_error)


@pytest.mark.parametrize(("data_dim", "hidden"), [(784, [400]), (100, [400]), (64, [256]), (3, [32])])
def test_unset_widths_scale_with_the_data_and_are_recorded(data_dim: int, hidden: list[int]) -> None:
    assert default_hidden(data_dim) == hidden
    config = load_config(None)
    assert config.model.hidden is None
    model = build_model(config, data_dim)
    posterior = build_posterior(config, model, 10)
    assert config.model.hidden == hidden  # the config a run writes to config.json
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [*hidden, data_dim]
    encoder = [m.in_features for m in posterior.modules() if isinstance(m, torch.nn.Linear)]
    assert encoder == [data_dim, *hidden]  # mirrored
    rebuilt = resolve_config(config.model_dump())  # a resumed run, or avi evaluate
    assert [p.shape for p in build_model(rebuilt, data_dim).parameters()] == [p.shape for p in model.parameters()]


def test_given_widths_are_kept_and_linear_models_take_none() -> None:
    config = load_config(None, {"model": {"hidden": [32, 16]}, "inference": {"encoder_hidden": [8]}})
    model = build_model(config, 64)
    posterior = build_posterior(config, model, 10)
    assert config.model.hidden == [32, 16]
    assert [m.out_features for m in posterior.modules() if isinstance(m, torch.nn.Linear)][0] == 8
    ppca = load_config(None, {"model": {"name": "ppca", "latent_dim": 2}})
    build_model(ppca, 64)
    assert ppca.model.hidden is None


def test_the_gaussian_likelihood_starts_at_the_datas_moments() -> None:
    x = torch.rand(200, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 0.5, 0.1, 0.0])
    config = load_config(None, {"model": {"likelihood": "gaussian", "hidden": [8]}})
    model = build_model(config, 5, x)
    assert isinstance(model, VAEModel)
    rms_sd = x.double().var(0, correction=0).mean().sqrt().float()
    torch.testing.assert_close(torch.nn.functional.softplus(model.raw_scale), rms_sd.expand(5))
    torch.testing.assert_close(_output_bias(model), x.mean(0))
    again = build_model(config, 5, x)  # a rebuild starts at the same point (the checkpoint then replaces it)
    assert isinstance(again, VAEModel)
    assert torch.equal(again.raw_scale, model.raw_scale) and torch.equal(_output_bias(again), _output_bias(model))
    bernoulli = build_model(load_config(None, {"model": {"hidden": [8]}}), 5, x)
    assert not hasattr(bernoulli, "raw_scale")


@pytest.mark.parametrize("name", ["ppca", "factor-analysis"])
def test_linear_gaussian_models_start_at_the_datas_moments(name: str) -> None:
    """mu at the mean; W's rows and Psi share each dimension's variance: the start's marginal
    variances diag(W W^T + Psi) are the data's up to W's random row norms (K = 400 rows of
    N(0, 1/K) entries: norms within a few 1/sqrt(K) of 1), and its exact log-likelihood of data
    far from the origin is far above the default start's."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 2.0, 0.5, 0.1, 3.0], dtype=torch.float64)
    x = 100 + torch.randn(500, 5, generator=gen, dtype=torch.float64) * scale
    config = load_config(None, {"model": {"name": name, "latent_dim": 400}})
    model = build_model(config, 5, x).double()
    assert isinstance(model, LinearGaussian)
    var, mean = torch.var_mean(x, dim=0, correction=0)
    torch.testing.assert_close(model.mu, mean)
    noise = var / 2 if name == "factor-analysis" else (var / 2).mean().expand(5)
    torch.testing.assert_close(model.noise_var, noise)
    row_norms = (model.W**2).sum(1) / (var / 2)
    assert ((row_norms - 1).abs() < 6 * (2 / 400) ** 0.5).all()  # chi^2_K / K: sd sqrt(2/K)
    default = build_model(config, 5).double()
    with torch.no_grad():
        assert model.exact_log_marginal(x).mean() > default.exact_log_marginal(x).mean() + 100
    # a constant dimension (an image's border pixel) keeps W's and Psi's default start there
    x[:, 4] = 7.0
    torch.manual_seed(3)
    partly = build_model(config, 5, x).double()
    torch.manual_seed(3)
    default = build_model(config, 5).double()
    torch.testing.assert_close(partly.mu, torch.cat([mean[:4], torch.tensor([7.0], dtype=torch.float64)]))
    torch.testing.assert_close(partly.W[4], default.W[4])
    torch.testing.assert_close(partly.W[:4], default.W[:4] * (var[:4] / 2).sqrt()[:, None])
    varying = var[:4] / 2
    noise = torch.cat([varying, default.noise_var[4:]]) if name == "factor-analysis" else varying.mean().expand(5)
    torch.testing.assert_close(partly.noise_var, noise)


def _output_bias(model: VAEModel) -> torch.Tensor:
    layer = model.decoder[-1]
    assert isinstance(layer, torch.nn.Linear)
    return layer.bias


def test_standardisation_uses_the_training_splits_moments_everywhere(digits: Path) -> None:
    config = load_config(
        None, {"data": {"source": str(digits), "standardize": True}, "model": {"likelihood": "gaussian"}}
    )
    assert config.data.mean is None
    splits = load_splits(config)
    assert config.data.mean is not None and config.data.sd is not None and len(config.data.mean) == 64
    train = splits.train.x.double()
    varying = train.std(0) > 0
    torch.testing.assert_close(train.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.std(0, correction=0)[varying], torch.ones(int(varying.sum()), dtype=torch.float64))
    assert int(varying.sum()) < 64  # constant pixels stay 0 (sd recorded as 1), not NaN
    assert abs(splits.test.x.double().mean().item()) > 1e-3  # the test split's own moments are not used
    # avi evaluate --data FILE and a resumed run read the recorded moments from config.json
    stored = resolve_config(json.loads(json.dumps(config.model_dump())))
    raw = torch.as_tensor(np.load(digits))
    again = load_splits(stored)
    torch.testing.assert_close(again.test.x, splits.test.x)
    x = prepare_data(raw[:5], stored, "data file").x
    torch.testing.assert_close(x, (raw[:5] - torch.tensor(stored.data.mean)) / torch.tensor(stored.data.sd))
    with pytest.raises(DataError, match="^data file has dimension 3 but the run standardises 64 dimensions"):
        prepare_data(raw[:5, :3], stored, "data file")


def test_out_of_range_data_name_the_gaussian_likelihood() -> None:
    x = np.full((4, 3), 2.0)
    with pytest.raises(DataError, match=r"outside \[0, 1\].*\(--likelihood gaussian\) or scale the data to \[0, 1\]$"):
        prepare_data(x, load_config(None), "data file")
    with pytest.raises(DataError, match=r"\(--model vae --likelihood gaussian\)"):
        prepare_data(x, load_config(None, {"model": {"name": "sbn"}}), "data file")
    prepare_data(x, load_config(None, {"model": {"likelihood": "gaussian"}}), "data file")  # not binarised: fine
