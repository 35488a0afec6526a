"""The flows of Rezende and Mohamed (2015) and van den Berg et al. (2018) as run settings: fit,
evaluate (an IWAE bound, which may not exceed the model's exact log p(x)) and their options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avi.errors import ConfigError
from avi.evaluation import log_likelihood
from avi.families import PlanarFamily, RadialFamily, SylvesterFamily
from avi.runs.build import build_family
from avi.runs.config import load_config
from avi.runs.load import load_trained
from avi.runs.rundir import read_metrics
from avi.runs.train import run_fit

from .conftest import small_job


@pytest.mark.parametrize(
    ("settings", "kind", "layers", "centred"),
    [
        ({"family": "planar"}, PlanarFamily, 10, False),
        ({"family": "planar", "flow_centred": True}, PlanarFamily, 10, True),
        ({"family": "radial", "flow_length": 3, "flow_centred": True}, RadialFamily, 3, True),
        ({"family": "sylvester", "sylvester_variant": "triangular"}, SylvesterFamily, 4, False),
        ({"family": "sylvester", "flow_centred": True}, SylvesterFamily, 4, True),
    ],
)
def test_each_flow_family_is_built_with_its_length(settings: dict, kind: type, layers: int, centred: bool) -> None:
    family = build_family(load_config(None, {"inference": settings, "model": {"latent_dim": 3}}))
    assert isinstance(family, kind)
    assert (family.flows, family.centred) == (layers, centred)


@pytest.mark.parametrize("strategy", ["amortized", "per-datapoint"])
def test_a_ppca_run_with_a_planar_posterior_bounds_the_exact_log_likelihood(tmp_path: Path, strategy: str) -> None:
    path = tmp_path / "job.toml"
    path.write_text(small_job(2, points=300, name="ppca"))
    config = load_config(path, {"inference": {"family": "planar", "strategy": strategy, "flow_length": 2}})
    run = load_trained(run_fit(config, tmp_path / "run"))
    x = run.splits.test.x
    bound = log_likelihood(run.model, run.posterior, x, k=50).value
    exact = run.model.exact_log_marginal(x)
    assert torch.isfinite(bound).all()
    assert bound.mean() <= exact.mean() + 3 * bound.std() / len(x) ** 0.5


def test_avi_evaluate_reports_how_much_each_flow_layer_reshapes_q(avi_cli, tmp_path: Path) -> None:
    # A planar run of 3 layers: each epoch's diagnostics count its layers in use (all 3 at the
    # end), the evaluation holds one reshaping per layer, the table a row of them, and a layer
    # pushed out of q's mass (b = 1e4 in the encoder's bias) is named in a warning; a
    # mean-field run has none of these.
    path, run = tmp_path / "job.toml", tmp_path / "run"
    path.write_text(small_job(2, points=300, name="ppca"))
    fitted = avi_cli("fit", str(path), "--family", "planar", "--set", "inference.flow_length=3", "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    result = avi_cli("evaluate", str(run), "--k", "10")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((run / "evaluation-k10.json").read_text())
    reshaping = evaluation["flow_layer_reshaping"]
    assert len(reshaping) == 3 and all(r > 0 for r in reshaping), reshaping
    assert "flow layers in use" in result.stdout and "reshape q by at most" not in result.stderr

    state = torch.load(run / "checkpoint.pt", weights_only=False)
    output = [key for key in state["posterior"] if key.endswith("bias")][-1]  # the encoder's last layer
    state["posterior"][output][2 * 2 + (2 * 2 + 1) * 2 - 1] = 1e4  # lambda = (m, s, (u, w, b) per layer): b of layer 2
    torch.save(state, run / "checkpoint.pt")
    result = avi_cli("evaluate", str(run), "--k", "10")
    assert result.returncode == 0, result.stderr
    assert "warning: 1 of 3 flow layers (number 2) reshape q by at most 0.0001" in result.stderr, result.stderr

    rows = read_metrics(run)  # the collapse diagnostics of every epoch count the layers in use
    assert all(row["flow_layers_in_use"] in (0, 1, 2, 3) for row in rows) and rows[-1]["flow_layers_in_use"] == 3
    assert "flow layers in use 3" in fitted.stderr, fitted.stderr

    plain = tmp_path / "plain"
    assert avi_cli("fit", str(path), "--out", str(plain)).returncode == 0
    assert "flow_layers_in_use" not in read_metrics(plain)[-1]
    assert avi_cli("evaluate", str(plain), "--k", "10").returncode == 0
    assert json.loads((plain / "evaluation-k10.json").read_text())["flow_layer_reshaping"] is None


def test_flow_options_are_refused_where_they_do_not_apply() -> None:
    with pytest.raises(ConfigError, match="flow_length applies to the planar, radial and sylvester"):
        load_config(None, {"inference": {"family": "iaf", "flow_length": 3}})
    with pytest.raises(ConfigError, match="applies to the sylvester family"):
        load_config(None, {"inference": {"family": "radial", "householder_reflections": 2}})
    with pytest.raises(ConfigError, match="flow_centred applies to the planar, radial and sylvester"):
        load_config(None, {"inference": {"family": "mean-field", "flow_centred": True}})
