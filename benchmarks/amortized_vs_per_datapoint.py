"""Seconds per test point and ELBO reached: amortized inference against per-datapoint VI.

The model is a trained MNIST VAE (the ``kingma-welling`` preset, 784-400-20, Bernoulli
likelihood, mean-field Gaussian q), held fixed. Inference for N test points x: (N, 784), taken
from the start of avi's fixed binarisation of the MNIST test set, by

- ``amortized``: one encoder forward pass over all N points, ``posterior(x)``.
- ``prior-init``: :func:`avi.inference.infer` with a per-datapoint posterior (a
  :class:`~avi.inference.LocalPosterior` table), started at N(0, I) for every point, all N points
  optimised together as one (N, 40) tensor by Adam (the run's ``local_lr``, cosine decay to 0
  over the run) for 100, 500 and 2000 steps. Each step count is a separate run.
- ``encoder-init``: the same, started at the encoder's output (``infer(..., init_from=encoder)``),
  which measures how much of the amortization gap per-datapoint steps close.

Each per-datapoint run is seeded, so its repeats compute the same thing; its time is the
median over repeats, interleaved across methods. The cores are shared and their speed drifts,
so every run comes just after 20 timed encoder passes, and its speed ratio to amortized
inference is the median over repeats of (run seconds / median of those passes).

The ELBO of every posterior is E_q[log p(x|z)] - KL(q || p(z)), the KL exact and the
expectation estimated from S reparameterised samples per point (S calls of
:func:`avi.evaluation.elbo_per_point` with one sample each, every method from the same seed, so
methods share their noise draws). Reported per method: the mean over points, its Monte Carlo
standard error sqrt(sum_i Var_i / S) / N (Var_i the sample variance of point i's S draws), the
standard error over test points std_i / sqrt(N), and the paired gain over the amortized
posterior with its standard error over points. log p(x) is estimated once, by importance
sampling with k samples from the best posterior (:func:`avi.evaluation.log_likelihood`), to
split the gap: amortization gap (best per-datapoint ELBO - amortized ELBO, a lower bound on the
true one) and approximation gap (log p(x) - best per-datapoint ELBO).

The VAE is loaded from ``--run RUN_DIR`` (an amortized run, :func:`avi.runs.train.load_trained`)
or trained in-process by :func:`avi.runs.train.run_fit` into a temporary directory: 10 epochs on
the whole training split, or 1 epoch on 5,000 points with ``--quick``. torch runs on one thread:
the cores are shared, and with two threads a busy neighbour slowed the per-datapoint loop up to
tenfold.

Usage: ``python benchmarks/amortized_vs_per_datapoint.py [--quick] [--out PATH] [--run RUN_DIR]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from machine import run_facts, write_report
from torch import Tensor, nn

from avi.encoders import AmortizedPosterior
from avi.evaluation import elbo_per_point, log_likelihood
from avi.inference import LocalPosterior, infer
from avi.runs.config import load_config
from avi.runs.rundir import SUMMARY, read_json
from avi.runs.train import TrainedRun, load_trained, run_fit

THREADS = 1
SEED = 0
DEFAULT_OUT = Path(__file__).parent / "results" / "amortized_vs_per_datapoint.json"
STEPS = (100, 500, 2000)
ENCODER_PASSES = 20


@dataclass(frozen=True)
class Mode:
    points: int
    train_epochs: int
    train_subset: int | None
    repeats: int
    eval_samples: int
    log_px_k: int


FULL = Mode(
    points=1000, train_epochs=10, train_subset=None, repeats=3, eval_samples=200, log_px_k=1000
)
QUICK = Mode(
    points=100, train_epochs=1, train_subset=5000, repeats=1, eval_samples=100, log_px_k=100
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def log_epoch(row: dict[str, Any]) -> None:
    log(f"  epoch {row['epoch']}: validation ELBO {row['val_elbo']:.2f}")


def load_run(mode: Mode, run_dir: Path | None) -> tuple[TrainedRun, dict[str, Any]]:
    """The trained VAE from ``run_dir``, or trained in-process; and a record of its training."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds = None
        if run_dir is None:
            log(f"training the VAE in-process ({mode.train_epochs} epochs)")
            config = load_config(
                None,
                {
                    "model": {"preset": "kingma-welling"},
                    "data": {"subset": mode.train_subset},
                    "train": {"epochs": mode.train_epochs, "threads": THREADS, "seed": SEED},
                },
            )
            start = time.perf_counter()
            run_fit(config, Path(tmp) / "run", on_epoch=log_epoch)
            seconds = time.perf_counter() - start
        run = load_trained(run_dir or Path(tmp) / "run")
        summary = read_json((run_dir or Path(tmp) / "run") / SUMMARY)
    if not isinstance(run.posterior, AmortizedPosterior):
        sys.exit(f"{run_dir} is a per-datapoint run; the benchmark needs a trained encoder")
    return run, {
        "source": "in-process" if run_dir is None else str(run_dir),
        "epochs": summary.get("epochs_done"),
        "train_points": len(run.splits.train),
        "final_val_elbo": summary.get("val_elbo"),
        "train_seconds": seconds,
        "config": run.config.model_dump(),
    }


class Timings(NamedTuple):
    """Seconds of every encoder pass and of every per-datapoint run (one per repeat), the ratio
    of each run to the median of the encoder passes just before it, and the runs' posteriors."""

    encoder: list[float]
    runs: dict[str, list[float]]
    ratios: dict[str, list[float]]
    posteriors: dict[str, nn.Module]


@torch.no_grad()
def time_encoder(posterior: nn.Module, x: Tensor) -> list[float]:
    """Seconds of each of ``ENCODER_PASSES`` forward passes over all of x."""
    times = []
    for _ in range(ENCODER_PASSES):
        start = time.perf_counter()
        posterior(x)
        times.append(time.perf_counter() - start)
    return times


def measure(
    model: nn.Module, encoder: AmortizedPosterior, x: Tensor, *, lr: float, repeats: int
) -> Timings:
    """Every per-datapoint run in each of ``repeats`` rounds, each run just after
    ``ENCODER_PASSES`` encoder passes, so that its ratio to amortized inference is taken under
    the same load. Runs are seeded: every repeat returns the same posterior."""

    def run(init: str, steps: int) -> nn.Module:
        torch.manual_seed(SEED)
        if init == "prior":
            return infer(model, LocalPosterior(len(x), encoder.family), x, steps=steps, lr=lr)
        return infer(model, encoder, x, steps=steps, lr=lr, init_from=encoder)

    run("prior", 20)  # warm-up, untimed: the first calls pay one-off set-up costs
    time_encoder(encoder, x)
    runs = {f"{i}-init {steps}": (i, steps) for i in ("prior", "encoder") for steps in STEPS}
    timings = Timings([], {name: [] for name in runs}, {name: [] for name in runs}, {})
    for repeat in range(repeats):
        for name, (init, steps) in runs.items():
            passes = time_encoder(encoder, x)
            start = time.perf_counter()
            timings.posteriors[name] = run(init, steps)
            seconds = time.perf_counter() - start
            timings.encoder.extend(passes)
            timings.runs[name].append(seconds)
            timings.ratios[name].append(seconds / statistics.median(passes))
            log(f"  repeat {repeat + 1}/{repeats} {name}: {seconds:.2f} s")
    return timings


def elbo_draws(model: nn.Module, posterior: nn.Module, x: Tensor, samples: int) -> Tensor:
    """ELBO draws (S, N): S one-sample ELBOs (analytic KL) per point, from the benchmark's seed."""
    torch.manual_seed(SEED + 1)
    draws = [elbo_per_point(model, posterior, x, num_samples=1)[0] for _ in range(samples)]
    return torch.stack(draws)


def method_record(
    seconds: list[float], ratios: list[float], draws: Tensor, reference: Tensor
) -> dict[str, Any]:
    """Timing (medians of ``seconds`` and of the ``ratios`` to amortized inference) and ELBO
    of one method; ``reference``: the amortized posterior's ELBO draws."""
    samples, n = draws.shape
    total = statistics.median(seconds)
    per_point = draws.mean(0)
    gain = per_point - reference.mean(0)
    return {
        "seconds_total": total,
        "seconds_per_point": total / n,
        "speed_ratio_vs_amortized": statistics.median(ratios),
        "seconds_each": seconds,
        "speed_ratio_each": ratios,
        "elbo": per_point.mean().item(),
        "elbo_mc_stderr": ((draws.var(0) / samples).sum().sqrt() / n).item(),
        "elbo_points_stderr": (per_point.std() / math.sqrt(n)).item(),
        "gain_vs_amortized": gain.mean().item(),
        "gain_points_stderr": (gain.std() / math.sqrt(n)).item(),
    }


def _key(name: str) -> str:
    """A method name as a JSON key: ``prior-init 500`` -> ``prior_init_500``."""
    return name.replace("-", "_").replace(" ", "_")


def print_summary(report: dict[str, Any], out: Path) -> None:
    methods, gaps = report["methods"], report["gaps"]
    print(
        f"amortized vs per-datapoint VI: {report['test_points']} MNIST test points, VAE 784-400-20 "
        f"trained {report['training']['epochs']} epochs, torch {report['torch_version']}, "
        f"{report['threads']} thread(s)"
    )
    header = ("s total", "s/point", "x amort.", "ELBO", "+-MC", "gain")
    print(f"{'method':18s}" + "".join(f" {h:>9s}" for h in header))
    for name, m in methods.items():
        print(
            f"{name:18s} {m['seconds_total']:9.3g} {m['seconds_per_point']:9.2e}"
            f" {m['speed_ratio_vs_amortized']:9.0f} {m['elbo']:9.2f} {m['elbo_mc_stderr']:9.2f}"
            f" {m['gain_vs_amortized']:9.2f}"
        )
    print(
        f"log p(x) ~ {gaps['log_px']:.2f} (IWAE k={gaps['log_px_k']},"
        f" proposal {gaps['log_px_proposal']}):"
        f" amortization gap >= {gaps['amortization_gap']:.2f},"
        f" approximation gap {gaps['approximation_gap']:.2f} nats"
    )
    print(f"wrote {out} ({report['seconds']:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, 100 points (< 1 minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument("--run", type=Path, help="an amortized run directory to use, not training")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    started = time.perf_counter()

    torch.set_num_threads(THREADS)  # training too: run_fit leaves the threads to its caller
    run, training = load_run(mode, args.run)
    model, encoder = run.model.cpu(), run.posterior.cpu()
    x = run.splits.test.x[: mode.points].cpu()
    lr = run.config.inference.local_lr

    log(f"timing: {len(x)} points, {ENCODER_PASSES} encoder passes before each per-datapoint run")
    timings = measure(model, encoder, x, lr=lr, repeats=mode.repeats)

    log(f"evaluating ELBOs with {mode.eval_samples} samples per point")
    amortized_draws = elbo_draws(model, encoder, x, mode.eval_samples)
    methods = {"amortized": method_record(timings.encoder, [1.0], amortized_draws, amortized_draws)}
    for name, posterior in timings.posteriors.items():
        draws = elbo_draws(model, posterior, x, mode.eval_samples)
        seconds, ratios = timings.runs[name], timings.ratios[name]
        methods[name] = method_record(seconds, ratios, draws, amortized_draws)

    best = max(timings.posteriors, key=lambda name: methods[name]["elbo"])
    log(f"log p(x): importance sampling, k={mode.log_px_k}, proposal {best}")
    torch.manual_seed(SEED + 2)
    ll = log_likelihood(model, timings.posteriors[best], x, k=mode.log_px_k)
    log_px = ll.value.mean().item()
    gaps = {
        "log_px": log_px,
        "log_px_mc_stderr": (ll.stderr.square().sum().sqrt() / len(x)).item(),
        "log_px_k": mode.log_px_k,
        "log_px_proposal": best,
        "amortization_gap": methods[best]["elbo"] - methods["amortized"]["elbo"],
        "approximation_gap": log_px - methods[best]["elbo"],
    }

    report = {
        "summary": {
            **{f"{_key(name)}_elbo": m["elbo"] for name, m in methods.items()},
            "amortized_seconds_per_point": methods["amortized"]["seconds_per_point"],
            "prior_init_500_seconds_per_point": methods["prior-init 500"]["seconds_per_point"],
            "prior_init_500_speed_ratio": methods["prior-init 500"]["speed_ratio_vs_amortized"],
            "amortization_gap": gaps["amortization_gap"],
            "approximation_gap": gaps["approximation_gap"],
        },
        "methods": methods,
        "gaps": gaps,
        "test_points": len(x),
        "test_data": "first N MNIST test points, avi's fixed binarisation (seed data.seed + 1)",
        "optimiser": f"Adam lr {lr}, cosine decay to 0 over each run, all points as one tensor",
        "eval_samples": mode.eval_samples,
        "elbo_estimator": "analytic KL, S one-sample reconstruction draws per point, common seed",
        "repeats": mode.repeats,
        "encoder_passes_per_run": ENCODER_PASSES,
        "timing": (
            "wall clock; seconds: median over repeats (per-datapoint) or over all encoder passes"
            " (amortized); speed ratio: median over repeats of run seconds / median of the"
            f" {ENCODER_PASSES} encoder passes just before the run"
        ),
        "training": training,
        "quick": args.quick,
        **run_facts(started),
    }
    write_report(args.out, report)
    print_summary(report, args.out)


if __name__ == "__main__":
    main()
