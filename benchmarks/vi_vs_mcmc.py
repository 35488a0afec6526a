"""Time to a stated posterior accuracy: mean-field VI, full-rank VI, MH, Gibbs and NUTS.

Two models, each scored against a reference posterior with :func:`avi.baselines.compare.compare`:

- ``linear_regression``: Bayesian linear regression, 200 synthetic points with 10 equicorrelated
  features (correlation 0.8, so the posterior is correlated), known noise; the reference is the
  exact Gaussian posterior. Gibbs sweeps the 10 coefficients (conjugate Normal conditionals).
- ``logistic_regression``: Bayesian logistic regression on scikit-learn's breast-cancer data
  (569 points, 30 standardised features and an intercept, prior N(0, I)); the reference is a long
  NUTS run (4 chains x 2,500 draws after 500 warm-up; its own Monte Carlo error in the means is
  about 1/sqrt(ESS) ~ 0.02 posterior sds). With ``--quick`` the model keeps the first 5
  features, and every run is shorter.

Accuracy (:func:`avi.baselines.compare.posterior_errors`): ``mean_error`` is the RMS over
coordinates of (mean - reference mean) / reference sd, ``sd_error`` the RMS of
sd / reference sd - 1. A method reaches the stated accuracy when both are <= 0.1; its
``seconds_to_tolerance`` is the compute time until then (MCMC: warm-up included, every chain
counted; VI: optimisation steps only). VI is run for a fixed number of Adam steps (learning rate
0.1 on a cosine decay, 8 draws per step); MCMC with 4 chains. torch runs on one thread.

Usage: ``python benchmarks/vi_vs_mcmc.py [--quick] [--out PATH]`` (JSON, default
benchmarks/results/vi_vs_mcmc.json; the figure is written beside it as a .png).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from machine import brief_run_facts, write_report

from avi.baselines.compare import Comparison, Settings, compare, format_table, reference_moments, write_figure
from avi.baselines.regression import BayesianLinearRegression, BayesianLogisticRegression, breast_cancer, synthetic_regression

DEFAULT_OUT = Path(__file__).parent / "results" / "vi_vs_mcmc.json"
TOLERANCE = 0.1
FULL = Settings(vi_steps=2000, mh_warmup=4000, mh_samples=20000, gibbs_samples=4000, nuts_warmup=500, nuts_samples=1000,
                reference_warmup=500, reference_samples=2500, tolerance=TOLERANCE)  # fmt: skip
QUICK = Settings(vi_steps=1000, chains=2, mh_warmup=2000, mh_samples=5000, gibbs_samples=1000, nuts_warmup=100, nuts_samples=200,
                 reference_warmup=200, reference_samples=1000, tolerance=TOLERANCE)  # fmt: skip
METHODS = ["mean-field-vi", "full-rank-vi", "mh", "nuts"]


def ratio(comparison: Comparison, slow: str, fast: str) -> float | None:
    """Time to tolerance of ``slow`` over that of ``fast`` (None if either never reached it)."""
    times = {r.method: r.seconds_to_tolerance for r in comparison.results}
    return times[slow] / times[fast] if times.get(slow) and times.get(fast) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = QUICK if args.quick else FULL
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()

    linear = BayesianLinearRegression(*synthetic_regression(200, 10, generator, correlation=0.8))
    X, y = breast_cancer()
    logistic = BayesianLogisticRegression(X[:, :6] if args.quick else X, y)
    reference = reference_moments(logistic, settings, generator)
    comparisons = {
        "linear_regression": compare(linear, METHODS[:3] + ["gibbs", "nuts"], generator=generator, settings=settings,
                                     model_name="linear regression (exact reference)"),  # fmt: skip
        "logistic_regression": compare(logistic, METHODS, generator=generator, settings=settings, reference=reference,
                                       model_name="logistic regression, breast cancer (NUTS reference)"),  # fmt: skip
    }
    models = {}
    for name, comparison in comparisons.items():
        entry = comparison.to_dict()
        entry["speed_ratio_nuts_over_full_rank_vi"] = ratio(comparison, "nuts", "full-rank-vi")
        entry["speed_ratio_mh_over_full_rank_vi"] = ratio(comparison, "mh", "full-rank-vi")
        models[name] = entry
        print(format_table(comparison))
        print(f"  time to tolerance, NUTS / full-rank VI: {entry['speed_ratio_nuts_over_full_rank_vi']}; "
              f"MH / full-rank VI: {entry['speed_ratio_mh_over_full_rank_vi']}\n")  # fmt: skip
    result = {
        "benchmark": "vi_vs_mcmc",
        "quick": args.quick,
        "tolerance": TOLERANCE,
        "settings": settings.__dict__,
        "logistic_features": logistic.dim - 1,
        "methods": models["logistic_regression"]["methods"],
        "models": models,
        "seconds": time.perf_counter() - started,
        **brief_run_facts(),
    }
    write_report(args.out, result)
    write_figure(list(comparisons.values()), args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
