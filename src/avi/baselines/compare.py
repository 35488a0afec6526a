"""Wall-clock time against posterior accuracy: exact inference, VI and MCMC on one model and data set.

:func:`compare` runs each method on a :class:`~avi.baselines.targets.Target` and scores the
posterior mean and standard deviation it reports against a reference (the exact posterior when
the target has one, else a long NUTS run), all coordinates pooled:

    mean_error = sqrt(mean_k ((m_k - m*_k) / s*_k)^2)      (error in reference posterior sds)
    sd_error   = sqrt(mean_k (s_k / s*_k - 1)^2)            (relative error of the sds)

Each method leaves a trace of (seconds, mean_error, sd_error): VI every few optimiser steps,
MCMC after n draws of every chain for n on a geometric grid (warm-up time included), so the
time to reach an accuracy (both errors <= ``tolerance`` from then on) is read off the trace.
:func:`write_figure` draws the traces (PNG), each method in its own colour and marker in every
panel (:data:`METHOD_STYLE`) and exact inference, whose error against the exact reference is 0, as a
vertical line at the time it takes; :func:`format_table` prints the summary; :func:`run_compare`
is the body of ``avi compare``. A ``progress`` callback receives a :class:`Stage` when the
reference and each method start and end (:func:`format_stage` makes it a plain line);
:data:`QUICK` is the short setting of ``avi compare --quick``.
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
from matplotlib.lines import Line2D
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
    "METHOD_STYLE",
    "MODELS",
    "QUICK",
    "Comparison",
    "MethodResult",
    "Progress",
    "Settings",
    "Stage",
    "compare",
    "comparison_figure",
    "default_methods",
    "format_stage",
    "format_table",
    "make_model",
    "posterior_errors",
    "reference_moments",
    "run_compare",
    "stage_work",
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


#: ``avi compare --quick``: 2 chains and a quarter to a tenth of the draws and steps, so that each
#: model takes under a minute on 2 cores (logistic regression also keeps only its first 5
#: features); the shorter NUTS reference has a Monte Carlo error of about 0.03 posterior sds
QUICK = Settings(vi_steps=1000, chains=2, mh_warmup=1000, mh_samples=3000, gibbs_warmup=50, gibbs_samples=1000,
                 nuts_warmup=100, nuts_samples=200, reference_warmup=100, reference_samples=500)  # fmt: skip


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
    settings: Settings = field(default_factory=Settings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``methods`` maps each method to its figures and trace."""
        return {
            "model": self.model,
            "reference": self.reference,
            "tolerance": self.tolerance,
            "settings": asdict(self.settings),
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
        sampler, warmup, draws = _SAMPLERS[method](settings)
        samples = sampler(target, warmup=warmup, num_samples=draws, num_chains=settings.chains, generator=generator)
        trace = _mcmc_trace(samples, ref)
        diagnostics = samples.diagnostics()
        extra = {"accept_rate": samples.accept_rate, "divergences": samples.divergences,
                 "rhat_max": float(diagnostics.rhat.max()), "ess_min": float(diagnostics.ess.min())}  # fmt: skip
    seconds, mean_error, sd_error = trace[-1]
    return MethodResult(
        method, seconds, mean_error, sd_error, _time_to_tolerance(trace, settings.tolerance), trace, extra
    )


#: each sampler with its warm-up and kept draws per chain under given settings
_SAMPLERS: dict[str, Callable[[Settings], tuple[Callable[..., Samples], int, int]]] = {
    "mh": lambda s: (mh, s.mh_warmup, s.mh_samples),
    "gibbs": lambda s: (gibbs, s.gibbs_warmup, s.gibbs_samples),
    "nuts": lambda s: (nuts, s.nuts_warmup, s.nuts_samples),
}


def stage_work(name: str, settings: Settings, *, exact_reference: bool = True) -> str:
    """What stage ``name`` (a method, or "reference") runs under ``settings``, in a few words."""
    if name == "reference":
        if exact_reference:
            return "exact posterior"
        length = f"{settings.reference_warmup}+{settings.reference_samples}"
        return f"long NUTS run, {settings.chains} chains x {length} draws"
    if name == "exact":
        return "closed form"
    if name.endswith("-vi"):
        return f"{settings.vi_steps} Adam steps x {settings.vi_samples} draws"
    _, warmup, draws = _SAMPLERS[name](settings)
    return f"{settings.chains} chains x {warmup}+{draws} draws"


@dataclass(frozen=True)
class Stage:
    """The reference posterior or one method (``name``), stage ``index`` of ``total``, starting
    (``seconds`` None) or finished after ``seconds`` of wall-clock time; ``work`` says what it
    runs, ``result`` is a finished method's, ``reference`` a finished reference's kind."""

    name: str
    index: int
    total: int
    work: str
    seconds: float | None = None
    result: MethodResult | None = None
    reference: str | None = None


#: called with each :class:`Stage` as it starts and as it ends
Progress = Callable[[Stage], None]


def format_stage(stage: Stage) -> str:
    """One plain line for a progress log: ``[2/6] mh: started (4 chains x 2000+10000 draws)``,
    then ``[2/6] mh: done in 3.14 s, mean error 0.021, sd error 0.034``."""
    head = f"[{stage.index}/{stage.total}] {stage.name}:"
    if stage.seconds is None:
        return f"{head} started ({stage.work})"
    if stage.result is not None:
        return (
            f"{head} done in {stage.seconds:.3g} s, mean error {stage.result.mean_error:.3f}, "
            f"sd error {stage.result.sd_error:.3f}"
        )
    return f"{head} done in {stage.seconds:.3g} s ({stage.reference or stage.work})"


def _check_methods(methods: Sequence[str], target: Target, name: str) -> list[str]:
    """The methods that apply to ``target``, after checking that ``methods`` are among them."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(
            f"unknown methods {unknown}; choose from {list(METHODS)}" if unknown else "no methods to compare"
        )
    applicable = default_methods(target)
    missing = [m for m in methods if m in ("exact", "gibbs") and m not in applicable]
    if missing:
        raise AviError(
            f"{', '.join(missing)} does not apply to {name}: "
            "it has no closed-form posterior or conjugate full conditionals"
        )
    return applicable


def compare(
    target: Target, methods: Sequence[str], *, generator: torch.Generator, settings: Settings = Settings(),
    reference: tuple[Tensor, Tensor, str] | None = None, model_name: str | None = None,
    progress: Progress | None = None,
) -> Comparison:  # fmt: skip
    """Run ``methods`` (names from :data:`METHODS`) on ``target`` and score each against
    ``reference`` = (mean, sd, name), computed by :func:`reference_moments` if not given;
    ``progress`` hears of the reference and each method, in that order, as it starts and ends."""
    applicable = _check_methods(methods, target, model_name or target.name)
    report = progress or (lambda _: None)
    total = len(methods) + (reference is None)
    if reference is None:
        work = stage_work("reference", settings, exact_reference="exact" in applicable)
        report(Stage("reference", 1, total, work))
        start = time.perf_counter()
        reference = reference_moments(target, settings, generator)
        report(Stage("reference", 1, total, work, time.perf_counter() - start, reference=reference[2]))
    results = []
    for index, method in enumerate(methods, start=total - len(methods) + 1):
        work = stage_work(method, settings)
        report(Stage(method, index, total, work))
        start = time.perf_counter()
        results.append(_run_method(method, target, settings, reference[:2], generator))
        report(Stage(method, index, total, work, time.perf_counter() - start, results[-1]))
    return Comparison(model_name or target.name, reference[2], settings.tolerance, results, settings)


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


#: each method's colour and marker, the same in every panel of every figure
METHOD_STYLE: dict[str, tuple[str, str]] = {
    "exact": ("black", "*"),
    "mean-field-vi": ("tab:blue", "o"),
    "full-rank-vi": ("tab:orange", "s"),
    "mh": ("tab:green", "^"),
    "gibbs": ("tab:red", "v"),
    "nuts": ("tab:purple", "D"),
}


def _draw_panel(ax: Any, comparison: Comparison) -> None:
    """Mean error (solid) and sd error (dashed) of each method against seconds, log-log. Exact
    inference scored against itself has error 0, which a log axis cannot show: it is the vertical
    line at the seconds it takes."""
    for r in comparison.results:
        color, marker = METHOD_STYLE[r.method]
        if r.method == "exact" and r.mean_error == 0 and r.sd_error == 0:
            ax.axvline(r.seconds, color=color, ls=":", lw=1.5, label="exact")
            ax.text(r.seconds, 0.98, " exact", transform=ax.get_xaxis_transform(), rotation=90, va="top", fontsize=8)
            continue
        seconds, mean_error, sd_error = (list(c) for c in zip(*r.trace, strict=True))
        ax.plot(seconds, mean_error, "-", marker=marker, ms=3, color=color, label=f"{r.method} mean")
        ax.plot(seconds, sd_error, "--", marker=marker, ms=3, mfc="none", color=color, label=f"{r.method} sd")
    ax.axhline(comparison.tolerance, color="gray", lw=0.8, label="tolerance")
    ax.set(xscale="log", yscale="log", xlabel="seconds", ylabel=f"error vs {comparison.reference} posterior",
           title=comparison.model)  # fmt: skip


def comparison_figure(comparisons: Sequence[Comparison]) -> Figure:
    """One panel per comparison (:func:`_draw_panel`) and one legend below them all: a colour and
    marker per method, the line style per error, the tolerance."""
    fig = Figure(figsize=(6 * len(comparisons), 5.2), layout="constrained")
    for ax, comparison in zip(fig.subplots(1, len(comparisons), squeeze=False)[0], comparisons, strict=True):
        _draw_panel(ax, comparison)
    shown = {r.method for c in comparisons for r in c.results}
    handles = [
        Line2D([], [], color="black", ls=":", label="exact (error 0, at its time)")
        if method == "exact"
        else Line2D([], [], color=METHOD_STYLE[method][0], marker=METHOD_STYLE[method][1], ms=4, label=method)
        for method in METHODS
        if method in shown
    ]
    handles += [
        Line2D([], [], color="gray", ls="-", label="mean error (posterior sds)"),
        Line2D([], [], color="gray", ls="--", label="sd error (relative)"),
        Line2D([], [], color="gray", lw=0.8, label="tolerance"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 1 + 2 * len(comparisons)),
        fontsize=8,
        frameon=False,
    )
    return fig


def write_figure(comparisons: Sequence[Comparison], path: Path) -> None:
    """:func:`comparison_figure` as a PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(comparison_figure(comparisons), path, 110)


def _normal_normal(g: torch.Generator, quick: bool) -> Target:
    return NormalNormal(
        1.0 + torch.randn(50, generator=g, dtype=torch.float64), prior_mean=0.0, prior_sd=1.0, noise_sd=1.0
    )


def _beta_bernoulli(g: torch.Generator, quick: bool) -> Target:
    return BetaBernoulli((torch.rand(30, generator=g, dtype=torch.float64) < 0.3).double(), a=1.0, b=1.0)


def _dirichlet_categorical(g: torch.Generator, quick: bool) -> Target:
    x = torch.multinomial(torch.tensor([0.2, 0.3, 0.5]), 50, replacement=True, generator=g)
    return DirichletCategorical(x, torch.ones(3, dtype=torch.float64))


def _linear_regression(g: torch.Generator, quick: bool) -> Target:
    return BayesianLinearRegression(*synthetic_regression(200, 10, g, correlation=0.8))


def _logistic_regression(g: torch.Generator, quick: bool) -> Target:
    X, y = breast_cancer()
    return BayesianLogisticRegression(X[:, :6] if quick else X, y)


#: models ``avi compare --model`` knows: name -> (description, builder from a seeded generator
#: and whether the run is quick)
MODELS: dict[str, tuple[str, Callable[[torch.Generator, bool], Target]]] = {
    "linear-regression": (
        "Bayesian linear regression, 200 synthetic points, 10 correlated features (exact)",
        _linear_regression,
    ),
    "logistic-regression": (
        "Bayesian logistic regression, breast-cancer data, 30 features + intercept (quick: the first 5) "
        "(NUTS reference)",
        _logistic_regression,
    ),
    "normal-normal": ("Normal mean with known variance, 50 points (exact)", _normal_normal),
    "beta-bernoulli": ("Bernoulli probability, 30 points (exact)", _beta_bernoulli),
    "dirichlet-categorical": ("categorical probabilities, 3 categories, 50 points (exact)", _dirichlet_categorical),
}


def make_model(name: str, generator: torch.Generator, *, quick: bool = False) -> Target:
    """The target called ``name`` in :data:`MODELS`, its data drawn with ``generator`` (``quick``:
    the smaller data of ``avi compare --quick``)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name][1](generator, quick)


def default_methods(target: Target) -> list[str]:
    """Every method that applies: exact and Gibbs only where the target has them."""
    try:
        target.exact_posterior()
        exact = ["exact"]
    except AviError:
        exact = []
    return exact + ["mean-field-vi", "full-rank-vi", "mh"] + (["gibbs"] if target.gibbs_blocks else []) + ["nuts"]


def run_compare(
    model: str, methods: str | None, out: Path | None, *, seed: int = 0, quick: bool = False,
    settings: Settings | None = None, progress: Progress | None = None,
) -> tuple[Comparison, Path]:  # fmt: skip
    """``avi compare``: build the model, run the methods (comma-separated names, default all
    that apply), write ``comparison.json`` and ``comparison.png`` to ``out`` (default
    runs/compare-MODEL); returns the comparison and the directory. ``quick`` picks the smaller
    data and, unless ``settings`` are given, :data:`QUICK`; ``progress`` is passed to :func:`compare`."""
    generator = torch.Generator().manual_seed(seed)
    target = make_model(model, generator, quick=quick)
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else default_methods(target)
    settings = settings or (QUICK if quick else Settings())
    comparison = compare(target, chosen, generator=generator, settings=settings, model_name=model, progress=progress)
    out = Path(out) if out is not None else Path("runs") / f"compare-{model}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "comparison.json", (json_text(comparison.to_dict(), indent=1) + "\n").encode())
    write_figure([comparison], out / "comparison.png")
    return comparison, out
