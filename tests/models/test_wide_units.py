"""Units on a widened linear layer (avi.nn.WIDE_UNITS): maxout (model.activation = "maxout"),
each hidden unit the largest of MAXOUT_PIECES consecutive outputs of the linear layer before it,
and gated linear units ("gated"), (W x + b) * sigmoid(V x + c), in every MLP of a run; refused in
one line where no MLP layer holds them; avi fit / --resume / avi evaluate in process."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from avi.errors import ConfigError
from avi.nn import MAXOUT_PIECES, WIDE_UNITS, Maxout, mlp
from avi.runs.build import build_model, build_posterior
from avi.runs.config import load_config
from tests.cli_harness import avi_in_process


def test_a_maxout_unit_is_the_largest_of_its_pieces() -> None:
    # mlp([3, 2, 1], "maxout"): Linear(3, 8), Maxout, Linear(2, 1); unit j of the hidden layer is
    # max over pieces p of (W x + b)[j * 4 + p], computed here from the weights.
    torch.manual_seed(0)
    net = mlp([3, 2, 1], "maxout")
    first, last = net[0], net[2]
    assert isinstance(first, nn.Linear) and isinstance(net[1], Maxout) and isinstance(last, nn.Linear)
    assert (first.in_features, first.out_features, last.in_features) == (3, 2 * MAXOUT_PIECES, 2)
    x = torch.randn(5, 3)
    pieces = (x @ first.weight.T + first.bias).reshape(5, 2, MAXOUT_PIECES)
    units = torch.stack([pieces[:, j, :].max(-1).values for j in range(2)], -1)
    torch.testing.assert_close(net(x), units @ last.weight.T + last.bias, rtol=1e-6, atol=1e-6)
    # each unit's argmax differs across points: not one fixed piece (a linear network)
    assert len(set(pieces[:, 0, :].argmax(-1).tolist())) > 1


def test_a_gated_unit_is_its_linear_half_times_the_sigmoid_of_its_gate() -> None:
    # mlp([3, 2, 1], "gated"): Linear(3, 4), GLU, Linear(2, 1); unit j is (W x + b)[j] times
    # sigmoid((W x + b)[2 + j]), Tomczak and Welling's GatedDense(3, 2), computed from the weights.
    torch.manual_seed(0)
    net = mlp([3, 2, 1], "gated")
    first, last = net[0], net[2]
    assert isinstance(first, nn.Linear) and isinstance(net[1], nn.GLU) and isinstance(last, nn.Linear)
    assert (first.in_features, first.out_features, last.in_features) == (3, 4, 2)
    x = torch.randn(5, 3)
    pre = x @ first.weight.T + first.bias
    units = pre[:, :2] * torch.sigmoid(pre[:, 2:])
    torch.testing.assert_close(net(x), units @ last.weight.T + last.bias, rtol=1e-6, atol=1e-6)
    # the gate is neither shut nor open throughout: not a linear network, not a zero one
    gate = torch.sigmoid(pre[:, 2:])
    assert 0.05 < gate.min() and gate.max() < 0.95


@pytest.mark.parametrize(("activation", "unit"), [("maxout", Maxout), ("gated", nn.GLU)])
def test_the_vae_and_its_encoder_get_wide_layers(activation: str, unit: type[nn.Module]) -> None:
    width = WIDE_UNITS[activation][0]
    config = load_config(None, {"model": {"activation": activation, "hidden": [8], "latent_dim": 3}})
    model = build_model(config, 20)
    posterior: Any = build_posterior(config, model, 10)
    assert [type(m) for m in model.decoder] == [nn.Linear, unit, nn.Linear]
    assert model.decoder[0].out_features == 8 * width and model.decoder[2].in_features == 8
    assert posterior.encoder[0].out_features == 8 * width and isinstance(posterior.encoder[1], unit)


@pytest.mark.parametrize("activation", sorted(WIDE_UNITS))
@pytest.mark.parametrize(
    ("overrides", "refused"),
    [({"network": "conv"}, "model.network 'conv'"), ({"decoder": "made"}, "the made decoder")],
)
def test_wide_units_are_refused_where_no_mlp_layer_holds_them(
    activation: str, overrides: dict[str, Any], refused: str
) -> None:
    message = f"model.activation '{activation}' builds MLP layers, not {refused}"
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, {"model": {"activation": activation, **overrides}})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("activation", sorted(WIDE_UNITS))
def test_fit_resume_and_evaluate_a_vae_of_wide_units(tmp_path: Path, activation: str) -> None:
    """An epoch, a resumed second, and avi evaluate: the checkpoint holds the widened layers,
    the IWAE bound is finite and not below the ELBO by more than its noise."""
    run = tmp_path / "run"
    fit = ("--data", "synthetic", "--set", "data.synthetic_points=200", "--set", f"model.activation={activation}",
           "--latent-dim", "2", "--hidden", "16", "--batch-size", "50", "--set", "train.threads=1")  # fmt: skip
    avi_in_process("fit", *fit, "--epochs", "1", "--out", str(run))
    avi_in_process("fit", "--resume", str(run), "--epochs", "2")
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    width = WIDE_UNITS[activation][0]
    assert state["epoch"] == 2 and state["model"]["decoder.0.weight"].shape == (16 * width, 2)
    result = json.loads(avi_in_process("evaluate", str(run), "--k", "50", "--json").stdout)
    assert math.isfinite(result["log_likelihood"]) and result["log_likelihood"] >= result["elbo"] - 1.0
    bad = avi_in_process("fit", "--data", "synthetic", "--set", f"model.activation={activation}", "--decoder",
               "made", "--out", str(tmp_path / "never"), code=2)  # fmt: skip
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "builds MLP layers, not the made decoder" in lines[0], bad.output
    assert not (tmp_path / "never").exists()
