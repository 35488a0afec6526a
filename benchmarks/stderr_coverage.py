"""Do the error bars of an importance-sampled log p(x) hold, and what do k-hat and the jackknife cost?

Coverage: the cases of ``tests/evaluation/test_stderr_coverage.py`` (PPCA with exact log p(x),
a small VAE with brute-force log p(x); N = 400 points, k = 50) with more replicates, and with
narrower proposals whose weights are heavy-tailed, for three nominal 95% intervals for mean
log p(x): the jackknife-debiased estimate ± its grouped jackknife standard error (new), the IWAE
bound ± the delta-method standard error (old), and the IWAE bound ± its delete-1 jackknife
standard error. Also the standard errors' root mean square against the real spread of the
replicates, the Pareto k-hat of the first replicate's points, and the bias of each estimate.

Cost: :func:`avi.evaluation.psis.pareto_k` and :func:`avi.evaluation.jackknife.jackknife_log_mean`
on 10,000 points x 5,000 log weights, in one call and one point per call (the way an evaluation
at k = 5000 meets them: one point per batch).

With ``--run DIR`` (a trained run, e.g. the 784-400-20 MNIST VAE), the real per-point spread of
the IWAE estimate over replicates against the delta-method and jackknife standard errors, on its
first test points.

Usage: ``python benchmarks/stderr_coverage.py [--quick] [--run DIR] [--out PATH]``; torch runs
on one thread (shared cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from machine import run_facts, write_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test's cases

from tests.evaluation.test_stderr_coverage import coverage, ppca_case, vae_case  # noqa: E402

from avi.evaluation.jackknife import jackknife_log_mean  # noqa: E402
from avi.evaluation.psis import khat_summary, pareto_k  # noqa: E402

THREADS = 1
DEFAULT_OUT = Path(__file__).parent / "results" / "stderr_coverage.json"
CHUNK = 200  # replicates per jackknife call (memory)

#: (name, case, shift, scale): the test's proposals first, then narrower ones
CASES = [
    ("ppca", ppca_case, 0.3, 0.8),
    ("ppca, q mean 0.5 sd off", ppca_case, 0.5, 0.8),
    ("ppca, q 0.5x covariance (tail index 0.5)", ppca_case, 0.0, 0.5),
    ("ppca, q 0.3x covariance (tail index 0.7)", ppca_case, 0.0, 0.3),
    ("small VAE", vae_case, 0.3, 1.2),
    ("small VAE, q 0.8x covariance", vae_case, 0.3, 0.8),
]


def measure_case(case: Any, shift: float, scale: float, replicates: int) -> dict[str, Any]:
    """Coverage of the three intervals, spread against standard errors, k-hat and bias."""
    log_weights, log_p = case(replicates, shift=shift, scale=scale)
    covers: list[dict[str, float]] = []
    means: dict[str, list[Tensor]] = {"bound": [], "debiased": []}
    ses: dict[str, list[Tensor]] = {"bound": [], "debiased": []}
    for start in range(0, replicates, CHUNK):
        part = log_weights[start : start + CHUNK]
        covers.append(coverage(part, log_p))
        estimate = jackknife_log_mean(part)
        for name in means:
            means[name].append(getattr(estimate, name).double().mean(1))
            ses[name].append(getattr(estimate, f"{name}_stderr").double().pow(2).sum(1).sqrt() / log_p.numel())
    k = log_weights.shape[-1]
    lw = log_weights[:CHUNK].double()
    delta = ((k * torch.exp(torch.logsumexp(2 * lw, -1) - 2 * torch.logsumexp(lw, -1)) - 1).clamp_min(0) / k).sqrt()
    khat = khat_summary(pareto_k(log_weights[0]))
    out: dict[str, Any] = {
        "replicates": replicates,
        "points": log_p.numel(),
        "k": k,
        "q_shift_sd": shift,
        "q_covariance_scale": scale,
        "coverage": {name: sum(c[name] for c in covers) / len(covers) for name in covers[0]},
        "khat_median": khat.median,
        "khat_share_over_0.7": khat.share_over,
        "delta_stderr_of_mean": (delta.pow(2).sum(1).sqrt() / log_p.numel()).mean().item(),
    }
    for name in means:
        values, stderrs = torch.cat(means[name]), torch.cat(ses[name])
        out[f"{name}_bias"] = log_p.mean().item() - values.mean().item()
        out[f"{name}_spread"] = values.std().item()
        out[f"{name}_stderr_rms"] = stderrs.pow(2).mean().sqrt().item()
    return out


def cost(points: int, k: int) -> dict[str, float]:
    """Seconds for k-hat and the jackknife on points x k log weights (N(0, 1.5^2)), in one call
    and extrapolated from 200 calls of one point each."""
    log_weights = 1.5 * torch.randn(points, k, generator=torch.Generator().manual_seed(0))
    out: dict[str, float] = {"points": points, "k": k}
    pareto_k(log_weights[:2])  # import ArviZ outside the timing
    for name, fn in (("pareto_k", pareto_k), ("jackknife", jackknife_log_mean)):
        start = time.perf_counter()
        fn(log_weights)
        out[f"{name}_one_call_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(200):
            fn(log_weights[i : i + 1])
        out[f"{name}_per_point_calls_s"] = (time.perf_counter() - start) / 200 * points
    return out


def run_spread(run_dir: str, points: int, replicates: int, k: int) -> dict[str, Any]:
    """Per-point spread over replicates of the IWAE estimate of a trained run's first test points,
    against the rms delta-method and jackknife standard errors, and k-hat."""
    import avi
    from avi.evaluation.importance import NoiseStream, chunk_log_weights
    from avi.objectives.scoring import fixed_points

    run = avi.load_run(run_dir)
    x = fixed_points(run.splits.test)[:points]
    index = torch.arange(points)
    rows = []
    with torch.no_grad():
        q = run.posterior(x, index)
        for seed in range(replicates):
            noise = NoiseStream(1000 + seed, index, run.model.latent_dim, x.dtype, x.device)
            chunks = [chunk_log_weights(run.model, q, x, min(500, k - s), noise) for s in range(0, k, 500)]
            rows.append(torch.cat(chunks, 1))
    lw = torch.stack(rows)  # (replicates, points, k)
    estimate = jackknife_log_mean(lw)
    lwd = lw.double()
    delta = ((k * torch.exp(torch.logsumexp(2 * lwd, -1) - 2 * torch.logsumexp(lwd, -1)) - 1).clamp_min(0) / k).sqrt()
    khat = khat_summary(pareto_k(lw[0]))
    rms = lambda t: t.double().pow(2).mean().sqrt().item()  # noqa: E731
    return {
        "run": run_dir,
        "points": points,
        "replicates": replicates,
        "k": k,
        "iwae_spread_rms": rms(estimate.bound.std(0)),
        "delta_stderr_rms": rms(delta),
        "jackknife_stderr_rms": rms(estimate.bound_stderr),
        "debiased_spread_rms": rms(estimate.debiased.std(0)),
        "debiased_stderr_rms": rms(estimate.debiased_stderr),
        "khat_median": khat.median,
        "khat_share_over_0.7": khat.share_over,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 replicates, 1,000 points for the cost")
    parser.add_argument("--run", help="a trained run directory for the per-point spread")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    replicates = 200 if args.quick else 1000
    started = time.perf_counter()
    result: dict[str, Any] = {"cases": {}}
    for name, case, shift, scale in CASES:
        start = time.perf_counter()
        result["cases"][name] = measure_case(case, shift, scale, replicates)
        print(f"{name}: {result['cases'][name]['coverage']} ({time.perf_counter() - start:.0f} s)", flush=True)
    result["cost"] = cost(1000 if args.quick else 10_000, 5000)
    print(f"cost: {result['cost']}", flush=True)
    if args.run:
        result["run_spread"] = run_spread(args.run, 40, 24, 500)
        print(f"run: {result['run_spread']}", flush=True)
    result["run"] = run_facts(started)
    write_report(args.out, result)


if __name__ == "__main__":
    main()
