"""``train.compile`` / ``avi fit --compile``: the compiled step computes the eager step's bound
and gradients up to float rounding, trains and resumes from the command line, and is refused
where it does not apply."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch._inductor import config as inductor_config

import avi.runs.train
from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.families import MeanFieldGaussian
from avi.inference import compile_step
from avi.inference.parallel import ShardStep
from avi.models import VAEModel
from avi.objectives import ELBO, IWAE, objective_named
from avi.objectives.estimators import NVILBaseline
from avi.runs.config import load_config
from avi.runs.train import run_fit
from tests.runs.conftest import small_job


def _small_step(activation: str = "relu") -> tuple[ShardStep, torch.Tensor]:
    """A VAE step (30 pixels, 4 latents, one hidden layer of 32 each way) and a batch of 20 binary points."""
    torch.manual_seed(0)
    model = VAEModel(30, 4, (32,), activation=activation)
    posterior = AmortizedPosterior(mlp_encoder(30, (32,), 8, activation=activation), MeanFieldGaussian(4))
    x = (torch.rand(20, 30, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    return ShardStep(model, posterior), x


@pytest.mark.slow
@pytest.mark.parametrize("objective", [ELBO(), IWAE(k=5)], ids=["elbo", "iwae"])
def test_compiled_step_has_the_eager_bound_and_gradients(objective) -> None:
    """Same parameters, data and noise (inductor told to draw with eager's generator): the per-point
    bound and every gradient agree to float32 rounding (relative 1e-5 of the largest entry)."""
    # torch's own patch, not monkeypatch: pytest >= 9.2 undoes a setattr on torch's config module
    # by deleting the option (absent from the module's __dict__), breaking later tests
    with inductor_config.patch(fallback_random=True):
        torch._dynamo.reset()  # no graph compiled earlier in this process, with Inductor's own random draws
        eager, x = _small_step("tanh")
        compiled, index = copy.deepcopy(eager), torch.arange(20)
        step = compile_step(compiled, Dataset(x))
        results = []
        for module, run in ((eager, eager), (compiled, step)):
            torch.manual_seed(2)
            terms = run(x, index, objective)
            (-terms.value.mean()).backward()
            results.append((terms.value.detach(), [p.grad for p in module.parameters()]))
    (value, grads), (compiled_value, compiled_grads) = results
    torch.testing.assert_close(compiled_value, value, rtol=1e-5, atol=1e-5 * value.abs().max().item())
    for g, cg in zip(grads, compiled_grads, strict=True):
        torch.testing.assert_close(cg, g, rtol=1e-4, atol=1e-5 * g.abs().max().item())


def test_compile_step_traces_the_analytic_elbo_in_one_graph() -> None:
    """torch.distributions' KL dispatch, untraceable on a cold cache, splits the graph of a step
    with an analytic KL; compile_step's eager warm-up call fills the cache, so one graph remains."""
    step, x = _small_step()
    objective = ELBO()

    def graph_breaks() -> int:
        torch._dynamo.reset()
        return torch._dynamo.explain(step)(x, torch.arange(20), objective).graph_break_count

    torch.distributions.kl._KL_MEMOIZE.clear()
    assert graph_breaks() > 0  # the split this guards against
    torch.distributions.kl._KL_MEMOIZE.clear()
    compile_step(step, Dataset(x))
    assert graph_breaks() == 0


#: every (objective, estimator) a VAE with a Gaussian q trains with, besides the analytic ELBO
ESTIMATORS = [("elbo", "score"), ("elbo", "score-baseline"), ("elbo", "nvil"), ("elbo", "stl"), ("iwae", "reparam"),
              ("iwae", "vimco"), ("iwae", "dreg"), ("renyi", "reparam"), ("cubo", "reparam"), ("rws", "reparam")]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("name", "estimator"), ESTIMATORS, ids=[f"{n}-{e}" for n, e in ESTIMATORS])
def test_every_estimator_traces_in_one_graph(name: str, estimator: str) -> None:
    """A graph break would split the compiled step and hand the pieces between eager and compiled
    code: after compile_step's warm-up the step traces whole with each estimator (its baseline's
    state, a moving average or a network, included)."""
    step, x = _small_step()
    objective = objective_named(name, k=5, estimator=estimator)
    step.state = NVILBaseline(30, hidden=4) if estimator == "nvil" else objective.init_state(30)
    compile_step(step, Dataset(x))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(step)(x, torch.arange(20), objective)
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]


def test_run_fit_compiles_as_the_call_says_on_resume(small_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_fit(compile=...)`` decides for a resumed run whatever its config says, and the
    epoch trains through the step compile_step returns; a resumed run of another strategy is refused."""
    calls: list[int] = []

    def spy(step, data):  # the step itself, counting its calls: the wiring without a compilation
        calls.append(0)
        return lambda *args: (calls.append(1), step(*args))[1]

    monkeypatch.setattr(avi.runs.train, "compile_step", spy)
    run = run_fit(load_config(small_config(1)), tmp_path / "eager")
    assert calls == []
    run_fit(run_dir=run, resume=True, epochs=2, compile=True)
    assert calls[0] == 0 and calls.count(1) == 10  # 486 training points (600 less 10% test, 10% validation), batches of 50
    calls.clear()
    run_fit(run_dir=run, resume=True, epochs=3)  # the config's compile = false holds again
    assert calls == []
    compiled = run_fit(load_config(small_config(1), {"train": {"compile": True}}), tmp_path / "compiled")
    assert calls.count(0) == 1
    calls.clear()
    run_fit(run_dir=compiled, resume=True, epochs=2, compile=False)
    assert calls == []
    local = run_fit(load_config(small_config(1), {"inference": {"strategy": "per-datapoint"}}), tmp_path / "local")
    with pytest.raises(ConfigError, match="compile applies to the amortized strategy, not 'per-datapoint'"):
        run_fit(run_dir=local, resume=True, epochs=2, compile=True)


@pytest.mark.slow
def test_fit_compile_flags(avi_cli, tmp_path: Path) -> None:
    """The flags as a user gives them: --compile for a new run (compiled for real), --no-compile
    and --compile on resume, one-line refusal for another strategy."""
    config = tmp_path / "job.toml"
    config.write_text(small_job(1))
    run = tmp_path / "compiled"
    fitted = avi_cli("fit", str(config), "--objective", "iwae", "--k", "5", "--compile", "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    assert json.loads((run / "config.json").read_text())["train"]["compile"] is True
    for epochs, flag in ((2, "--no-compile"), (3, "--compile")):
        resumed = avi_cli("fit", "--resume", str(run), "--epochs", str(epochs), flag)
        assert resumed.returncode == 0, resumed.stderr
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3
    refused = avi_cli("fit", str(config), "--strategy", "per-datapoint", "--compile", "--out", str(tmp_path / "no"))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "compile applies to the amortized strategy" in refused.stderr
