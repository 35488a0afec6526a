"""The inference gap on MNIST split into approximation and amortization gaps, per strategy.

Four posteriors, each trained with its MNIST VAE (the ``kingma-welling`` preset: 784-400-20,
ReLU, Bernoulli likelihood, dynamic binarisation; Adam 1e-3, batch 100) by
:func:`avi.runs.train.run_fit` into a temporary directory, all from the same seed:

- ``amortized``: mean-field Gaussian q(z|x) = family(encoder(x)), the plain VAE;
- ``semi-amortized``: SA-VAE (Kim et al. 2018), the encoder's proposal refined by K = 10
  gradient steps on the ELBO, trained through the refinement;
- ``iterative``: iterative amortized inference (Marino et al. 2018), 5 learned updates;
- ``iaf``: an amortized inverse autoregressive flow (zuko, 2 affine transforms, 64-64 hidden
  units) conditioned on the encoder's 40 outputs.

Then :func:`avi.runs.gaps.run_gaps` decomposes each run's gap on the first N points of avi's
fixed binarisation of the MNIST test set (Cremer, Li and Duvenaud 2018): L[q] is the ELBO of
the run's own posterior (refinement or updates included), L[q*] that of per-datapoint VI of
the same family started there (Adam, lr 0.05 with cosine decay, 4 samples per step; a flow
optimises its context only), log p(x) the IWAE bound with k samples from q*. Every ELBO is
estimated with 100 samples per point (analytic KL where torch has it).

Training time per epoch is the median over epochs of the training pass alone
(``epoch_seconds`` in the run's metrics: no validation, no diagnostics). The cores are shared
with other processes, so times carry noise of tens of percent; the ratios to the amortized
VAE are the comparable figures. torch runs on one thread.

Usage: ``python benchmarks/gap_table.py [--quick] [--out PATH]`` (JSON at PATH, default
``benchmarks/results/gap_table.json``, and a Markdown table beside it with suffix ``.md``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from machine import run_facts, write_report

from avi.evaluation import gap_decomposition
from avi.runs.build import load_splits
from avi.runs.config import load_config
from avi.runs.gaps import run_gaps
from avi.runs.rundir import SUMMARY, read_json
from avi.runs.train import run_fit

THREADS = 1
SEED = 0
DEFAULT_OUT = Path(__file__).parent / "results" / "gap_table.json"

#: strategy name -> config overrides of the ``inference`` section
STRATEGIES: dict[str, dict[str, Any]] = {
    "amortized": {"strategy": "amortized", "family": "mean-field"},
    # refine_lr 0.02: plain gradient ascent at the config default 0.1 overshoots on MNIST
    # posteriors (on a 2-epoch VAE, 10 steps of 0.1 lowered the test ELBO; 0.01-0.03 raised it)
    "semi-amortized": {
        "strategy": "semi-amortized",
        "family": "mean-field",
        "refine_steps": 10,
        "refine_lr": 0.02,
    },
    "iterative": {"strategy": "iterative", "family": "mean-field", "iterations": 5},
    "iaf": {
        "strategy": "amortized",
        "family": "iaf",
        "flow_transforms": 2,
        "flow_hidden": [64, 64],
    },
}


@dataclass(frozen=True)
class Mode:
    epochs: int
    train_subset: int | None
    #: held out of MNIST's 60,000 training images; run_fit computes collapse diagnostics on it
    #: every epoch, whose mutual-information estimate needs log q(z_i|x_j) for all pairs of a
    #: 500-point batch: for an IAF that is 20 sequential passes each, about 13 s per batch
    validation_fraction: float
    points: int
    steps: int
    k: int


FULL = Mode(epochs=3, train_subset=None, validation_fraction=0.01, points=500, steps=1000, k=1000)
QUICK = Mode(epochs=1, train_subset=1000, validation_fraction=0.002, points=50, steps=50, k=50)
#: gap_decomposition's settings that run_gaps leaves at their defaults
DECOMPOSITION = {
    name: inspect.signature(gap_decomposition).parameters[name].default
    for name in ("lr", "refine_samples", "elbo_samples")
}


#: what is kept of run_gaps' result
GAP_KEYS = (
    "n",
    "log_likelihood",
    "log_likelihood_method",
    "elbo_optimal",
    "elbo_amortized",
    "approximation_gap",
    "approximation_gap_stderr",
    "amortization_gap",
    "amortization_gap_stderr",
    "refine_steps",
    "seconds",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_and_decompose(name: str, mode: Mode, tmp: Path) -> dict[str, Any]:
    """Train strategy ``name`` into ``tmp``, decompose its gap, and return one record."""
    config = load_config(
        None,
        {
            "model": {"preset": "kingma-welling"},
            "data": {"subset": mode.train_subset, "validation_fraction": mode.validation_fraction},
            "inference": STRATEGIES[name],
            "train": {"epochs": mode.epochs, "threads": THREADS, "seed": SEED},
        },
    )
    run_dir = tmp / name
    log(f"{name}: training {mode.epochs} epoch(s)")
    started = time.perf_counter()
    run_fit(
        config,
        run_dir,
        on_epoch=lambda row: log(
            f"  epoch {row['epoch']}: {row['epoch_seconds']:.1f} s, validation ELBO {row['val_elbo']:.2f}"
        ),
    )
    fit_seconds = time.perf_counter() - started
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    rows = checkpoint["metrics"]
    summary = read_json(run_dir / SUMMARY)

    log(f"{name}: gap decomposition on {mode.points} test points ({mode.steps} steps, k={mode.k})")
    torch.manual_seed(SEED + 1)
    gaps = run_gaps(run_dir, points=mode.points, steps=mode.steps, k=mode.k)
    torch.set_num_threads(THREADS)
    return {
        "strategy": config.inference.strategy,
        "family": config.inference.family,
        "inference": config.inference.model_dump(include=set(STRATEGIES[name])),
        "epochs": len(rows),
        "train_points": len(load_splits(config).train),
        "epoch_seconds": statistics.median(r["epoch_seconds"] for r in rows),
        "epoch_seconds_each": [r["epoch_seconds"] for r in rows],
        "fit_wall_seconds": fit_seconds,
        "final_train_elbo": rows[-1]["train_elbo"],
        "final_val_elbo": summary.get("val_elbo"),
        "parameters": summary.get("parameters"),
        "decomposition": {key: gaps[key] for key in GAP_KEYS},
    }


CREMER_NOTE = (
    'Cremer, Li and Duvenaud (2018), "Inference Suboptimality in Variational Autoencoders" (ICML), '
    "tabulate these gaps on MNIST; their table could not be retrieved from the sources "
    "available here, so no numbers of theirs are quoted. Their abstract's conclusion: \"We find that "
    "divergence from the true posterior is often due to imperfect recognition networks, rather than "
    'the limited complexity of the approximating distribution." Their log p(x) comes from annealed '
    "importance sampling as well as IWAE; here it is the IWAE bound only."
)


def markdown(report: dict[str, Any]) -> str:
    """The table and its settings as Markdown."""
    s = report["settings"]
    lines = [
        "# Inference gaps on MNIST, per strategy",
        "",
        (
            f"VAE 784-400-20 (`kingma-welling` preset, Bernoulli, dynamic binarisation), each strategy trained "
            f"{s['epochs']} epoch(s) on {report['strategies']['amortized']['train_points']:,} training points "
            f"(Adam 1e-3, batch 100, seed {SEED}). Decomposition on the first {s['points']} test points "
            f"(fixed binarisation): L[q*] by {s['steps']} steps of per-datapoint Adam (lr {s['decomposition_lr']}, "
            f"cosine decay, {s['decomposition_refine_samples']} samples) from the posterior's output; log p(x) = IWAE "
            f"bound with k={s['k']} samples from q*; ELBOs with {s['decomposition_elbo_samples']} samples per point. Nats per test point, +- one standard error over points. "
            f"Training seconds per epoch: median training pass on {report['threads']} thread(s) of a shared "
            f"{report['cpus']}-core machine, load average {report['load_average']['start'][1]:.1f} at the start "
            f"(noisy; compare the ratios). {'QUICK MODE: smoke test only, not results.' if report['quick'] else ''}"
        ),
        "",
        "| strategy | family | s/epoch | x amortized | log p(x) | L[q*] | L[q] | approximation gap | amortization gap |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = report["strategies"]["amortized"]["epoch_seconds"]
    for name, r in report["strategies"].items():
        d = r["decomposition"]
        lines.append(
            f"| {name} | {r['family']} | {r['epoch_seconds']:.1f} | {r['epoch_seconds'] / base:.1f} | "
            f"{d['log_likelihood']:.2f} | {d['elbo_optimal']:.2f} | {d['elbo_amortized']:.2f} | "
            f"{d['approximation_gap']:.2f} +- {d['approximation_gap_stderr']:.2f} | "
            f"{d['amortization_gap']:.2f} +- {d['amortization_gap_stderr']:.2f} |"
        )
    lines += [
        "",
        "Settings: "
        + ", ".join(
            f"{name}: `{json.dumps(r['inference'])}`" for name, r in report["strategies"].items()
        )
        + ".",
        "The log p(x) estimates are lower bounds (IWAE), so each approximation gap is a lower bound on the true one,",
        "and each strategy has its own decoder: the gaps compare posteriors on different models.",
        "",
        "## Published figures",
        "",
        CREMER_NOTE,
        "",
        (
            f"Produced by `python benchmarks/gap_table.py{' --quick' if report['quick'] else ''}` in "
            f"{report['seconds'] / 60:.1f} minutes, torch {report['torch_version']}, {report['timestamp']}."
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 epoch on 1,000 points, 50 test points (< 1 minute)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes (the .md goes beside it)"
    )
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    torch.set_num_threads(THREADS)
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        strategies = {name: train_and_decompose(name, mode, Path(tmp)) for name in STRATEGIES}
    report = {
        "strategies": strategies,
        "settings": {
            **asdict(mode),
            **{f"decomposition_{name}": value for name, value in DECOMPOSITION.items()},
            "model": "kingma-welling preset: 784-400-20 MLP VAE, ReLU, Bernoulli, dynamic binarisation",
            "training": "Adam lr 1e-3, batch 100, ELBO with 1 sample and analytic KL where available",
            "test_data": "first N MNIST test points, avi's fixed binarisation (seed data.seed + 1)",
            "timing": "median over epochs of the training pass (epoch_seconds), wall clock, shared cores",
        },
        "published": CREMER_NOTE,
        "quick": args.quick,
        "cpus": os.cpu_count(),
        #: 1, 5 and 15-minute load averages of the shared machine, at start and end
        "load_average": {"start": load_before, "end": os.getloadavg()},
        **run_facts(started),
    }
    write_report(args.out, report, markdown(report))
    print(
        f"inference gaps on MNIST ({mode.points} test points, {mode.epochs} epoch(s) each), nats per point:"
    )
    print(
        f"{'strategy':16s} {'s/epoch':>8s} {'log p(x)':>9s} {'L[q*]':>8s} {'L[q]':>8s} {'approx.':>8s} {'amort.':>8s}"
    )
    for name, r in strategies.items():
        d = r["decomposition"]
        print(
            f"{name:16s} {r['epoch_seconds']:8.1f} {d['log_likelihood']:9.2f} {d['elbo_optimal']:8.2f}"
            f" {d['elbo_amortized']:8.2f} {d['approximation_gap']:8.2f} {d['amortization_gap']:8.2f}"
        )
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
