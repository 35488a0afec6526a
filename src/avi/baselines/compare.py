"""Wall-clock time against posterior accuracy: exact inference, VI and MCMC on one model and data set.

:func:`compare` runs each method on a :class:`~avi.baselines.targets.Target` and scores the
posterior mean and standard deviation it reports against a reference (the exact posterior when
the target has one, else a long NUTS run), all coordinates pooled:

    mean_error = sqrt(mean_k ((m_k - m*_k) / s*_k)^2)      (error in reference posterior sds)
    sd_error   = sqrt(mean_k (s_k / s*_k - 1)^2)            (relative error of the sds)

Each method leaves a trace of (seconds, mean_error, sd_error): VI every few optimiser steps,
MCMC after n draws of every chain for n on a geometric grid (warm-up time included), so the
time to reach an accuracy (both errors <= ``tolerance`` from then on) is read off the trace.
:func:`write_figure` draws the traces (PNG); :func:`format_table` prints the summary;
:func:`run_compare` is the body of ``avi compare``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from avi.atomic import atomic_write_bytes, save_figure
from avi.baselines.conjugate import BetaBernoulli, DirichletCategorical, NormalNormal
from avi.baselines.mcmc import Samples, gibbs, mh, nuts
from avi.baselines.regression import (
    BayesianLinearRegression,
    BayesianLogisticRegression,
    breast_cancer,
    synthetic_regression,
)
from avi.baselines.targets import Target
from avi.baselines.vi import fit_vi
from avi.errors import AviError, ConfigError
from avi.runs.rundir import json_text

__all__ = [
    "METHODS",
    "MODELS",
    "Comparison",
    "MethodResult",
    "Settings",
    "compare",
    "default_methods",
    "format_table",
    "make_model",
    "posterior_errors",
    "reference_moments",
    "run_compare",
    "write_figure",
]

METHODS = ("exact", "mean-field-vi", "full-rank-vi", "mh", "gibbs", "nuts")


@dataclass(frozen=True)
class Settings:
    """How long each method runs. MCMC: ``chains`` chains, warm-up then kept draws per chain."""

    vi_steps: int = 2000
    vi_lr: float = 0.1
    vi_samples: int = 8
    chains: int = 4
    mh_warmup: int = 2000
    mh_samples: int = 10000
    gibbs_warmup: int = 100
    gibbs_samples: int = 2000
    nuts_warmup: int = 500
    nuts_samples: int = 1000
    reference_warmup: int = 1000
    reference_samples: int = 5000
    tolerance: float = 0.1


@dataclass(frozen=True)
class MethodResult:
    """One method's final accuracy, total seconds, trace and the time it first reached the
    tolerance (None if it never did); ``extra`` holds sampler diagnostics."""

    method: str
    seconds: float
    mean_error: float
    sd_error: float
    seconds_to_tolerance: float | None
    trace: list[tuple[float, float, float]]
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """All methods on one model, scored against ``reference`` ("exact" or "nuts-long")."""

    model: str
    reference: str
    tolerance: float
    results: list[MethodResult]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``methods`` maps each method to its figures and trace."""
        return {
            "model": self.model,
            "reference": self.reference,
            "tolerance": self.tolerance,
            "methods": {r.method: {k: v for k, v in asdict(r).items() if k != "method"} for r in self.results},
        }


def posterior_errors(mean: Tensor, sd: Tensor, ref_mean: Tensor, ref_sd: Tensor) -> tuple[float, float]:
    """(mean_error, sd_error) of the module docstring, pooled over every coordinate."""
    mean_error = (((mean - ref_mean) / ref_sd) ** 2).mean().sqrt()
    sd_error = ((sd / ref_sd - 1) ** 2).mean().sqrt()
    return float(mean_error), float(sd_error)


def reference_moments(target: Target, settings: Settings, generator: torch.Generator) -> tuple[Tensor, Tensor, str]:
    """The reference posterior mean and sd: exact if the target has a closed form, else NUTS
    with ``reference_samples`` draws per chain."""
    try:
        exact = target.exact_posterior()
    except AviError:
        run = nuts(target, num_samples=settings.reference_samples, warmup=settings.reference_warmup,
                   num_chains=settings.chains, generator=generator)  # fmt: skip
        return run.mean(), run.sd(), "nuts-long"
    return exact.mean, exact.stddev, "exact"


def _time_to_tolerance(trace: Sequence[tuple[float, float, float]], tolerance: float) -> float | None:
    """The first time after which every later trace point has both errors <= tolerance."""
    reached = None
    for seconds, mean_error, sd_error in reversed(trace):
        if mean_error > tolerance or sd_error > tolerance:
            break
        reached = seconds
    return reached


def _mcmc_trace(samples: Samples, ref: tuple[Tensor, Tensor]) -> list[tuple[float, float, float]]:
    n_max = samples.draws.shape[1]
    grid = sorted({min(n_max, round(10 * 1.25**i)) for i in range(int(math.log(max(n_max / 10, 1), 1.25)) + 2)})
    return [(float(samples.seconds[n - 1]), *posterior_errors(samples.mean(n), samples.sd(n), *ref)) for n in grid]


def _run_method(
    method: str, target: Target, settings: Settings, ref: tuple[Tensor, Tensor], generator: torch.Generator
) -> MethodResult:
    extra: dict[str, float] = {}
    if method == "exact":
        start = time.perf_counter()
        exact = target.exact_posterior()
        seconds = time.perf_counter() - start
        trace = [(seconds, *posterior_errors(exact.mean, exact.stddev, *ref))]
    elif method.endswith("-vi"):
        fit = fit_vi(target, method.removesuffix("-vi"), steps=settings.vi_steps, lr=settings.vi_lr,
                     num_samples=settings.vi_samples, generator=generator)  # fmt: skip
        trace = [
            (float(s), *posterior_errors(m, d, *ref)) for s, m, d in zip(fit.seconds, fit.means, fit.sds, strict=True)
        ]
    else:
        sampler = {"mh": (mh, settings.mh_warmup, settings.mh_samples),
                   "gibbs": (gibbs, settings.gibbs_warmup, settings.gibbs_samples),
                   "nuts": (nuts, settings.nuts_warmup, settings.nuts_samples)}[method]  # fmt: skip
        samples = sampler[0](
            target, warmup=sampler[1], num_samples=sampler[2], num_chains=settings.chains, generator=generator
        )
        trace = _mcmc_trace(samples, ref)
        diagnostics = samples.diagnostics()
        extra = {"accept_rate": samples.accept_rate, "divergences": samples.divergences,
                 "rhat_max": float(diagnostics.rhat.max()), "ess_min": float(diagnostics.ess.min())}  # fmt: skip
    seconds, mean_error, sd_error = trace[-1]
    return MethodResult(
        method, seconds, mean_error, sd_error, _time_to_tolerance(trace, settings.tolerance), trace, extra
    )


def compare(
    target: Target, methods: Sequence[str], *, generator: torch.Generator, settings: Settings = Settings(),
    reference: tuple[Tensor, Tensor, str] | None = None, model_name: str | None = None,
) -> Comparison:  # fmt: skip
    """Run ``methods`` (names from :data:`METHODS`) on ``target`` and score each against
    ``reference`` = (mean, sd, name), computed by :func:`reference_moments` if not given."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(
            f"unknown methods {unknown}; choose from {list(METHODS)}" if unknown else "no methods to compare"
        )
    missing = [m for m in methods if m in ("exact", "gibbs") and m not in default_methods(target)]
    if missing:
        raise AviError(
            f"{', '.join(missing)} does not apply to {model_name or target.name}: "
            "it has no closed-form posterior or conjugate full conditionals"
        )
    ref = reference if reference is not None else reference_moments(target, settings, generator)
    results = [_run_method(m, target, settings, ref[:2], generator) for m in methods]
    return Comparison(model_name or target.name, ref[2], settings.tolerance, results)


def format_table(comparison: Comparison) -> str:
    """A plain-text table: method, seconds, errors, time to tolerance."""
    lines = [
        f"{comparison.model}: posterior accuracy against the {comparison.reference} posterior "
        f"(tolerance {comparison.tolerance} on both errors)",
        f"{'method':<15}{'seconds':>10}{'mean err':>10}{'sd err':>10}{'to tol (s)':>12}",
    ]
    for r in comparison.results:
        reached = f"{r.seconds_to_tolerance:.3g}" if r.seconds_to_tolerance is not None else "not reached"
        lines.append(f"{r.method:<15}{r.seconds:>10.3g}{r.mean_error:>10.3f}{r.sd_error:>10.3f}{reached:>12}")
    return "\n".join(lines)


def write_figure(comparisons: Sequence[Comparison], path: Path) -> None:
    """One panel per comparison: mean error (solid) and sd error (dashed) against seconds, log-log."""
    fig = Figure(figsize=(6 * len(comparisons), 4.5))
    axes = fig.subplots(1, len(comparisons), squeeze=False)
    for ax, comparison in zip(axes[0], comparisons, strict=True):
        for i, r in enumerate(comparison.results):
            seconds, mean_error, sd_error = (list(c) for c in zip(*r.trace, strict=True))
            color = f"C{i}"
            floor = 1e-4  # exact results have zero error; show them on the floor of the log scale
            ax.plot(seconds, [max(e, floor) for e in mean_error], "-o", ms=2, color=color, label=f"{r.method} mean")
            ax.plot(seconds, [max(e, floor) for e in sd_error], "--", color=color, label=f"{r.method} sd")
        ax.axhline(comparison.tolerance, color="gray", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="seconds", ylabel=f"error vs {comparison.reference} posterior",
               title=comparison.model)  # fmt: skip
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, 110)


def _normal_normal(g: torch.Generator) -> Target:
    return NormalNormal(
        1.0 + torch.randn(50, generator=g, dtype=torch.float64), prior_mean=0.0, prior_sd=1.0, noise_sd=1.0
    )


def _beta_bernoulli(g: torch.Generator) -> Target:
    return BetaBernoulli((torch.rand(30, generator=g, dtype=torch.float64) < 0.3).double(), a=1.0, b=1.0)


def _dirichlet_categorical(g: torch.Generator) -> Target:
    x = torch.multinomial(torch.tensor([0.2, 0.3, 0.5]), 50, replacement=True, generator=g)
    return DirichletCategorical(x, torch.ones(3, dtype=torch.float64))


def _linear_regression(g: torch.Generator) -> Target:
    return BayesianLinearRegression(*synthetic_regression(200, 10, g, correlation=0.8))


def _logistic_regression(g: torch.Generator) -> Target:
    return BayesianLogisticRegression(*breast_cancer())


#: models ``avi compare --model`` knows: name -> (description, builder from a seeded generator)
MODELS: dict[str, tuple[str, Callable[[torch.Generator], Target]]] = {
    "linear-regression": (
        "Bayesian linear regression, 200 synthetic points, 10 correlated features (exact)",
        _linear_regression,
    ),
    "logistic-regression": (
        "Bayesian logistic regression, breast-cancer data, 30 features + intercept (NUTS reference)",
        _logistic_regression,
    ),
    "normal-normal": ("Normal mean with known variance, 50 points (exact)", _normal_normal),
    "beta-bernoulli": ("Bernoulli probability, 30 points (exact)", _beta_bernoulli),
    "dirichlet-categorical": ("categorical probabilities, 3 categories, 50 points (exact)", _dirichlet_categorical),
}


def make_model(name: str, generator: torch.Generator) -> Target:
    """The target called ``name`` in :data:`MODELS`, its data drawn with ``generator``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name][1](generator)


def default_methods(target: Target) -> list[str]:
    """Every method that applies: exact and Gibbs only where the target has them."""
    try:
        target.exact_posterior()
        exact = ["exact"]
    except AviError:
        exact = []
    return exact + ["mean-field-vi", "full-rank-vi", "mh"] + (["gibbs"] if target.gibbs_blocks else []) + ["nuts"]


def run_compare(
    model: str, methods: str | None, out: Path | None, *, seed: int = 0, settings: Settings = Settings()
) -> tuple[Comparison, Path]:
    """``avi compare``: build the model, run the methods (comma-separated names, default all
    that apply), write ``comparison.json`` and ``comparison.png`` to ``out`` (default
    runs/compare-MODEL); returns the comparison and the directory."""
    generator = torch.Generator().manual_seed(seed)
    target = make_model(model, generator)
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else default_methods(target)
    comparison = compare(target, chosen, generator=generator, settings=settings, model_name=model)
    out = Path(out) if out is not None else Path("runs") / f"compare-{model}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "comparison.json", (json_text(comparison.to_dict(), indent=1) + "\n").encode())
    write_figure([comparison], out / "comparison.png")
    return comparison, out
