"""One latent per data point, 10,000 new points: amortized VI, per-datapoint VI and MCMC,
seconds per point and accuracy against the exact PPCA posterior.

The model is PPCA (x = W z + mu + eps, D = 10, K = 3, noise variance 0.5, float64) with known
parameters, held fixed; its posterior p(z | x) is Gaussian in closed form
(:meth:`avi.models.LinearGaussian.exact_posterior`). For N new points x (N, D):

- ``amortized``: an affine encoder x -> lambda of a full-rank Gaussian, trained beforehand on
  separate training points (ELBO, model fixed; training time reported, not counted per point);
  inference is one forward pass over the N points.
- ``per-datapoint``: :func:`avi.inference.infer`, a full-rank Gaussian per point, all N points
  optimised together as one tensor by Adam (learning rate 0.1, cosine decay) for S steps.
- ``mh``: adaptive random-walk Metropolis-Hastings on all N posteriors at once
  (:class:`avi.baselines.targets.LocalTarget`), each point and chain with its own step size and
  proposal covariance; 2 chains.
- ``gibbs``: systematic-scan Gibbs over the K coordinates (conjugate Normal conditionals); 2 chains.
- ``nuts``: Pyro's NUTS on the first 100 points only (sampled as one 300-dimensional density;
  per-point seconds scaled by 100), 2 chains.

Accuracy: ``mean_error`` and ``sd_error`` of :func:`avi.baselines.compare.posterior_errors`
(RMS over points and coordinates of the mean error in posterior sds, and of sd / exact sd - 1),
and for the Gaussian VI posteriors the mean KL(q || p(z | x)) per point in nats. torch runs on
one thread.

Usage: ``python benchmarks/amortized_local_latents.py [--quick] [--out PATH]`` (JSON, default
benchmarks/results/amortized_local_latents.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from machine import brief_run_facts, write_report
from torch.distributions import kl_divergence

from avi.baselines.compare import posterior_errors
from avi.baselines.mcmc import gibbs, mh, nuts
from avi.baselines.targets import LocalTarget
from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.families import make_family
from avi.inference import LocalPosterior, fit, infer
from avi.models import LinearGaussian

DEFAULT_OUT = Path(__file__).parent / "results" / "amortized_local_latents.json"
FULL = {"points": 10_000, "train_points": 10_000, "epochs": 20, "local_steps": 500, "mcmc_warmup": 1000, "mcmc_samples": 500,
        "gibbs_samples": 300, "nuts_points": 100, "nuts_warmup": 300, "nuts_samples": 500}  # fmt: skip
QUICK = {"points": 10_000, "train_points": 5_000, "epochs": 5, "local_steps": 200, "mcmc_warmup": 300, "mcmc_samples": 200,
         "gibbs_samples": 100, "nuts_points": 100, "nuts_warmup": 100, "nuts_samples": 150}  # fmt: skip


def make_model(generator: torch.Generator) -> LinearGaussian:
    W = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    mu = torch.randn(10, generator=generator, dtype=torch.float64)
    return LinearGaussian.from_parameters(W, mu, 0.5).requires_grad_(False)


def row(name: str, seconds: float, n: int, mean: torch.Tensor, sd: torch.Tensor, exact: Any, **extra: Any) -> dict[str, Any]:
    mean_error, sd_error = posterior_errors(mean, sd, exact.mean[: mean.shape[0]], exact.stddev[: mean.shape[0]])
    return {"method": name, "seconds": seconds, "points": n, "seconds_per_point": seconds / n,
            "mean_error": mean_error, "sd_error": sd_error, **extra}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, under a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mode = QUICK if args.quick else FULL
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = make_model(generator)
    x_train, _ = model.sample(mode["train_points"], generator)
    x, _ = model.sample(mode["points"], generator)
    n = x.shape[0]
    exact = model.exact_posterior(x)
    family = make_family("full-rank", 3)
    rows = []

    amortized = AmortizedPosterior(mlp_encoder(10, (), family.param_size), family).double()
    start = time.perf_counter()
    fit(model, amortized, Dataset(x_train), epochs=mode["epochs"], batch_size=100, lr=1e-2, train_model=False, generator=generator)
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        q = amortized(x)
        seconds = time.perf_counter() - start
        kl = float(kl_divergence(q, exact).mean())
    rows.append(row("amortized", seconds, n, q.mean, q.stddev, exact, kl=kl, training_seconds=train_seconds))

    start = time.perf_counter()
    local = infer(model, LocalPosterior(1, family), x, steps=mode["local_steps"], lr=0.1)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        q = local(x, torch.arange(n))
        kl = float(kl_divergence(q, exact).mean())
    rows.append(row("per-datapoint", seconds, n, q.mean, q.stddev, exact, kl=kl, steps=mode["local_steps"]))

    target = LocalTarget(model, x)
    samples = mh(target, num_samples=mode["mcmc_samples"], warmup=mode["mcmc_warmup"], num_chains=2, generator=generator)
    rows.append(row("mh", samples.total_seconds, n, samples.mean(), samples.sd(), exact,
                    accept_rate=samples.accept_rate, draws_per_chain=mode["mcmc_samples"]))  # fmt: skip
    del samples
    samples = gibbs(target, num_samples=mode["gibbs_samples"], warmup=20, num_chains=2, generator=generator)
    rows.append(row("gibbs", samples.total_seconds, n, samples.mean(), samples.sd(), exact, draws_per_chain=mode["gibbs_samples"]))
    del samples
    few = mode["nuts_points"]
    samples = nuts(LocalTarget(model, x[:few]), num_samples=mode["nuts_samples"], warmup=mode["nuts_warmup"], num_chains=2, generator=generator)
    rows.append(row("nuts", samples.total_seconds, few, samples.mean(), samples.sd(), exact,
                    draws_per_chain=mode["nuts_samples"], divergences=samples.divergences))  # fmt: skip

    base = rows[0]["seconds_per_point"]
    print(f"PPCA (D=10, K=3) posteriors for {n:,} new points; accuracy against the exact posterior")
    print(f"{'method':<15}{'s/point':>11}{'x amortized':>13}{'mean err':>10}{'sd err':>9}{'KL':>9}")
    for r in rows:
        r["slowdown_vs_amortized"] = r["seconds_per_point"] / base
        kl = f"{r['kl']:.4f}" if "kl" in r else "-"
        print(f"{r['method']:<15}{r['seconds_per_point']:>11.2e}{r['slowdown_vs_amortized']:>13.0f}{r['mean_error']:>10.3f}{r['sd_error']:>9.3f}{kl:>9}")
    result = {
        "benchmark": "amortized_local_latents", "quick": args.quick, "mode": mode,
        "methods": {r.pop("method"): r for r in rows},
        **brief_run_facts(),
    }  # fmt: skip
    write_report(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
