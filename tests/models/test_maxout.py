"""Maxout units (model.activation = "maxout"): each hidden unit the largest of MAXOUT_PIECES
consecutive outputs of the linear layer before it, in every MLP of a run; refused in one line
where no MLP layer holds them; avi fit / --resume / avi evaluate in process."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from avi.errors import ConfigError
from avi.nn import MAXOUT_PIECES, Maxout, mlp
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


def test_the_vae_and_its_encoder_get_maxout_layers() -> None:
    config = load_config(None, {"model": {"activation": "maxout", "hidden": [8], "latent_dim": 3}})
    model = build_model(config, 20)
    posterior: Any = build_posterior(config, model, 10)
    assert [type(m).__name__ for m in model.decoder] == ["Linear", "Maxout", "Linear"]
    assert model.decoder[0].out_features == 8 * MAXOUT_PIECES and model.decoder[2].in_features == 8
    assert posterior.encoder[0].out_features == 8 * MAXOUT_PIECES and isinstance(posterior.encoder[1], Maxout)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"network": "conv"}, "model.activation 'maxout' builds MLP layers, not model.network 'conv'"),
        ({"decoder": "made"}, "model.activation 'maxout' builds MLP layers, not the made decoder"),
    ],
)
def test_maxout_is_refused_where_no_mlp_layer_holds_it(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, {"model": {"activation": "maxout", **overrides}})
    assert "\n" not in str(err.value)


def test_fit_resume_and_evaluate_a_maxout_vae(tmp_path: Path) -> None:
    """An epoch, a resumed second, and avi evaluate: the checkpoint holds the 4x wide layers,
    the IWAE bound is finite and not below the ELBO by more than its noise."""
    run = tmp_path / "run"
    fit = ("--data", "synthetic", "--set", "data.synthetic_points=200", "--set", "model.activation=maxout",
           "--latent-dim", "2", "--hidden", "16", "--batch-size", "50", "--set", "train.threads=1")  # fmt: skip
    avi_in_process("fit", *fit, "--epochs", "1", "--out", str(run))
    avi_in_process("fit", "--resume", str(run), "--epochs", "2")
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 2 and state["model"]["decoder.0.weight"].shape == (16 * MAXOUT_PIECES, 2)
    result = json.loads(avi_in_process("evaluate", str(run), "--k", "50", "--json").stdout)
    assert math.isfinite(result["log_likelihood"]) and result["log_likelihood"] >= result["elbo"] - 1.0
    bad = avi_in_process("fit", "--data", "synthetic", "--set", "model.activation=maxout", "--decoder", "made",
               "--out", str(tmp_path / "never"), code=2)  # fmt: skip
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "builds MLP layers, not the made decoder" in lines[0], bad.output
    assert not (tmp_path / "never").exists()
