"""Aggressive training (He et al. 2019): encoder-only inner steps, then one decoder-only step per batch."""

from __future__ import annotations

import torch
from torch import nn

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.families import make_family
from avi.inference import make_optimizers
from avi.inference.aggressive import aggressive_epoch
from avi.models import VAEModel
from avi.objectives import ELBO
from avi.objectives.estimators import NVILBaseline


def _vae() -> tuple[VAEModel, AmortizedPosterior, Dataset]:
    g = torch.Generator().manual_seed(0)  # one stream: the draws are not the probabilities again
    x = torch.bernoulli(torch.rand(200, 12, generator=g), generator=g)
    model = VAEModel(12, 2, [8])
    family = make_family("mean-field", 2)
    return model, AmortizedPosterior(mlp_encoder(12, [8], family.param_size), family), Dataset(x)


def _adam_steps(optimizer: torch.optim.Optimizer, module: nn.Module) -> set[int]:
    """Adam's per-parameter step counts of ``module``'s parameters."""
    return {int(optimizer.state[p]["step"]) if p in optimizer.state else 0 for p in module.parameters()}


def test_decoder_steps_once_per_batch_and_encoder_only_in_the_inner_loop(generator: torch.Generator) -> None:
    model, posterior, data = _vae()
    (optimizer,) = make_optimizers(model, posterior, lr=1e-2)
    result = aggressive_epoch(
        model, posterior, data, [optimizer], objective=ELBO(), batch_size=50, generator=generator
    )
    assert result.epoch.examples == 200
    assert _adam_steps(optimizer, model) == {4}  # 200 / 50 batches
    assert _adam_steps(optimizer, posterior) == {result.encoder_steps}
    # At least one window of 10 steps per batch, fewer than 100 steps per batch.
    assert 4 * 10 <= result.encoder_steps <= 4 * 99
    assert result.epoch.elbo == result.epoch.reconstruction - result.epoch.kl


def test_no_inner_steps_leaves_the_encoder_unchanged(generator: torch.Generator) -> None:
    model, posterior, data = _vae()
    before = [p.detach().clone() for p in posterior.parameters()]
    decoder_before = [p.detach().clone() for p in model.parameters()]
    optimizers = make_optimizers(model, posterior, lr=1e-2)
    result = aggressive_epoch(
        model, posterior, data, optimizers, objective=ELBO(), batch_size=50, generator=generator,
        max_encoder_steps=1,
    )  # fmt: skip
    assert result.encoder_steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, posterior.parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(decoder_before, model.parameters()))


def test_inner_loop_stops_when_the_encoder_objective_stops_improving(generator: torch.Generator) -> None:
    # An encoder at its optimum: the mean loss over a window cannot keep falling, so the loop
    # stops long before its 99-step cap, after whole windows of 10 steps.
    model, posterior, data = _vae()
    optimizers = make_optimizers(model, posterior, lr=1e-2)
    for _ in range(3):
        result = aggressive_epoch(
            model, posterior, data, optimizers, objective=ELBO(), batch_size=50, generator=generator
        )
    assert result.encoder_steps % 10 == 0 or result.encoder_steps == 4 * 99
    assert result.encoder_steps < 4 * 99


def test_a_baseline_network_steps_with_the_encoder(generator: torch.Generator) -> None:
    # NVIL's baseline belongs to the inference side: its Adam steps on every encoder step
    model, posterior, data = _vae()
    baseline = NVILBaseline(12, hidden=4)
    optimizers = [*make_optimizers(model, posterior, lr=1e-2), torch.optim.Adam(baseline.parameters(), lr=1e-2)]
    result = aggressive_epoch(
        model, posterior, data, optimizers, objective=ELBO(estimator="nvil"),
        batch_size=50, generator=generator, baseline=baseline,
    )  # fmt: skip
    assert result.encoder_steps > 0
    assert _adam_steps(optimizers[1], baseline) == {result.encoder_steps}
    assert _adam_steps(optimizers[0], posterior) == {result.encoder_steps}
