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

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.families import MeanFieldGaussian
from avi.inference import compile_step
from avi.inference.parallel import ShardStep
from avi.models import VAEModel
from avi.objectives import make_objective
from tests.runs.conftest import small_job


@pytest.mark.slow
@pytest.mark.parametrize("objective", [make_objective("elbo"), make_objective("iwae", k=5)], ids=["elbo", "iwae"])
def test_compiled_step_has_the_eager_bound_and_gradients(objective, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same parameters, data and noise (inductor told to draw with eager's generator): the per-point
    bound and every gradient agree to float32 rounding (relative 1e-5 of the largest entry)."""
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    torch.manual_seed(0)
    model = VAEModel(30, 4, (32,), activation="tanh")
    posterior = AmortizedPosterior(mlp_encoder(30, (32,), 8, activation="tanh"), MeanFieldGaussian(4))
    x = (torch.rand(20, 30, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    index = torch.arange(20)
    eager, compiled = ShardStep(model, posterior), ShardStep(copy.deepcopy(model), copy.deepcopy(posterior))
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
    torch.manual_seed(0)
    model = VAEModel(30, 4, (32,))
    step = ShardStep(model, AmortizedPosterior(mlp_encoder(30, (32,), 8), MeanFieldGaussian(4)))
    x = (torch.rand(20, 30, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    objective = make_objective("elbo")

    def graph_breaks() -> int:
        torch._dynamo.reset()
        return torch._dynamo.explain(step)(x, torch.arange(20), objective).graph_break_count

    torch.distributions.kl._KL_MEMOIZE.clear()
    assert graph_breaks() > 0  # the split this guards against
    torch.distributions.kl._KL_MEMOIZE.clear()
    compile_step(step, Dataset(x))
    assert graph_breaks() == 0


@pytest.mark.slow
def test_fit_compile_trains_resumes_and_is_refused_elsewhere(run_avi, tmp_path: Path) -> None:
    config = tmp_path / "job.toml"
    config.write_text(small_job(2))
    run = tmp_path / "compiled"
    fitted = run_avi("fit", str(config), "--objective", "iwae", "--k", "5", "--compile", "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    assert json.loads((run / "config.json").read_text())["train"]["compile"] is True
    resumed = run_avi("fit", "--resume", str(run), "--epochs", "3", "--compile")
    assert resumed.returncode == 0, resumed.stderr
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == 3
    first, last = (float(r.split(",")[1]) for r in (rows[0], rows[-1]))
    assert last > first  # the bound rises: the compiled step trains
    refused = run_avi("fit", str(config), "--strategy", "per-datapoint", "--compile", "--out", str(tmp_path / "no"))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "compile applies to the amortized strategy" in refused.stderr
