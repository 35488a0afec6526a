"""The weight average: its closed form over a scripted sequence of weights, what it averages,
that applying it for a block leaves the raw weights as they were, bit for bit, and ``fit``'s
``ema_decay`` (validation and the returned modules use the average)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.families import make_family
from avi.inference import Hook, LocalPosterior, TrainState, fit
from avi.inference.averaging import WeightAverage, decay_at, load_averaged
from avi.inference.loop import StepInfo
from avi.models import LinearGaussian
from avi.objectives.scoring import mean_elbo


def _modules() -> tuple[nn.Linear, LocalPosterior]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    model.register_buffer("count", torch.tensor([5.0], dtype=torch.float64))
    return model, LocalPosterior(4, make_family("mean-field", 2))


def test_the_average_is_the_closed_form_of_the_warmed_up_decays() -> None:
    model, posterior = _modules()
    decay, steps = 0.8, 40
    average = WeightAverage(model, posterior, decay)
    generator = torch.Generator().manual_seed(1)
    weights = [model.weight.detach().clone()]  # p_0, the initial weights
    for _ in range(steps):
        with torch.no_grad():
            model.weight.copy_(torch.randn(2, 3, generator=generator, dtype=torch.float64))
        weights.append(model.weight.detach().clone())
        average.update()
    decays = [min(decay, (1 + t) / (10 + t)) for t in range(steps)]
    # s_T = prod_t d_t p_0 + sum_t (1 - d_t) prod_{u > t} d_u p_{t+1}
    expected = torch.prod(torch.tensor(decays, dtype=torch.float64)) * weights[0]
    for t in range(steps):
        tail = torch.prod(torch.tensor(decays[t + 1 :], dtype=torch.float64))
        expected = expected + (1 - decays[t]) * tail * weights[t + 1]
    shadow = average.state_dict()["model"]["weight"]
    torch.testing.assert_close(shadow, expected, rtol=1e-12, atol=1e-12)
    assert decays[0] == pytest.approx(0.1) and decays[-1] == decay  # the warm-up, then d
    assert decay_at(decay, 35) == decay and decay_at(decay, 34) < decay and decay_at(0.999, 0) == pytest.approx(0.1)
    assert average.updates == steps
    assert torch.equal(average.state_dict()["model"]["bias"], model.bias.detach())  # a constant stays exact


def test_the_table_and_buffers_are_not_averaged_and_applying_restores_the_raw_weights() -> None:
    model, posterior = _modules()
    average = WeightAverage(model, posterior, 0.5)
    state = average.state_dict()
    assert sorted(state["model"]) == ["bias", "weight"] and state["posterior"] == {}  # the per-point table is not
    with torch.no_grad():
        model.weight.add_(1.0)
        posterior.table.add_(1.0)
    average.update()
    raw = model.weight.detach().clone()
    with average.applied():
        torch.testing.assert_close(model.weight.detach(), average.state_dict()["model"]["weight"])
        assert not torch.equal(model.weight.detach(), raw)
    assert torch.equal(model.weight.detach(), raw)  # bit for bit

    other_model, other_posterior = _modules()
    other_model.count.fill_(9.0)
    load_averaged(other_model, other_posterior, average.state_dict())
    assert torch.equal(other_model.weight.detach(), average.state_dict()["model"]["weight"])
    assert other_model.count.item() == 9.0  # buffers stay the raw ones
    assert not torch.equal(other_posterior.table.detach(), posterior.table.detach())

    restored = WeightAverage(*_modules(), 0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 1 and torch.equal(restored.shadow[0], average.shadow[0])
    with pytest.raises(ValueError, match="averaged model weights name 'extra'"):
        load_averaged(other_model, other_posterior, {**state, "model": {"extra": torch.zeros(1)}})
    with pytest.raises(ValueError, match=r"^the decay of a weight average must be in \(0, 1\), got 1.0$"):
        WeightAverage(model, posterior, 1.0)


class _Recorder(Hook):
    """The raw weights after every step, and the global random state after the last one."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params, self.weights = params, [[p.detach().clone() for p in params]]
        self.rng = torch.get_rng_state()

    def on_step(self, state: TrainState, info: StepInfo) -> None:
        self.weights.append([p.detach().clone() for p in self.params])
        self.rng = torch.get_rng_state()


def test_fit_validates_with_the_average_and_leaves_it_in_the_modules(ppca_x: Tensor) -> None:
    torch.manual_seed(0)
    ppca, family = LinearGaussian(5, 2).double(), make_family("mean-field", 2)  # trainable, unlike the fixture
    posterior = AmortizedPosterior(mlp_encoder(5, (), family.param_size), family).double()
    data, validation = Dataset(ppca_x[:40]), Dataset(ppca_x[40:])
    params = [*ppca.parameters(), *posterior.parameters()]
    recorder, decay = _Recorder(params), 0.9
    history = fit(
        ppca, posterior, data, epochs=3, batch_size=10, validation=validation, hooks=[recorder], ema_decay=decay
    )
    steps = len(recorder.weights) - 1
    assert history.average is not None and history.average.updates == steps == 12
    for i, param in enumerate(params):  # s_T by the recursion over the raw weights the hooks saw
        expected = recorder.weights[0][i]
        for t in range(steps):
            expected = decay_at(decay, t) * expected + (1 - decay_at(decay, t)) * recorder.weights[t + 1][i]
        torch.testing.assert_close(param.detach(), expected, rtol=1e-12, atol=1e-12)
        assert not torch.equal(param.detach(), recorder.weights[-1][i])  # not the raw weights
    torch.set_rng_state(recorder.rng)  # the last validation's noise: it scored the averaged weights
    assert mean_elbo(ppca, posterior, validation) == history.validation_elbo[-1]
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        fit(ppca, posterior, data, epochs=1, ema_decay=1.0)
