"""Does the encoder generalise? The amortization gap on training and on test points, for a plain,
a denoising and a weight-normalised encoder (amortized inference regularisation, Shu et al. 2018).

Setup: the ``kingma-welling`` VAE (784-400-20 MLP decoder, mean-field Gaussian q, encoder
784-400-40) on a subset of the MNIST training images (dynamically binarised), trained by
:func:`avi.inference.fit` (Adam 1e-3, batch 100, one-sample ELBO with analytic KL). A small
training set and many epochs let the encoder (and the decoder) overfit, which is where Shu et
al. expect regularising the encoder to help. The variants share the data, the seed and the
schedule; they differ only in ``inference.denoise`` (Gaussian noise of std sigma, 0.1 and 0.3
by default, added to the encoder's input in training) or ``inference.weight_norm`` (every
encoder Linear layer weight-normalised).

Measured, for each variant on ``points`` training images (one fixed binarisation, seed
data.seed + 2, as ``avi gaps --split train`` uses) and ``points`` test images (avi's fixed test
binarisation): the gap decomposition of Cremer, Li and Duvenaud (2018),
:func:`avi.evaluation.gap_decomposition`, i.e. q* from ``steps`` Adam steps of per-datapoint VI
started at the encoder's output (lr 0.05, cosine decay, 4-sample gradients), ELBOs from 100
samples per point, log p(x) from the IWAE bound with k samples drawn from q*. The amortization
gap is L[q*] - L[q]; standard errors are over points. Its difference between test and training
points is what the encoder fails to generalise. Differences between variants are on the same
points but from different models; their standard errors treat them as independent
(conservative).

Usage: ``python benchmarks/generalization.py [--quick] [--sigma SIGMA ...] [--out PATH]``; writes
JSON and a Markdown table (same name, ``.md``). torch runs on one thread (shared cores).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from machine import run_facts, write_report

from avi.evaluation import gap_decomposition
from avi.inference import fit
from avi.runs.build import build_model, build_posterior, load_splits
from avi.runs.config import Config, load_config

THREADS = 1
SEED = 0
DEFAULT_OUT = Path(__file__).parent / "results" / "generalization.json"


@dataclass(frozen=True)
class Mode:
    train_points: int
    epochs: int
    points: int
    steps: int
    k: int


FULL = Mode(train_points=2000, epochs=100, points=150, steps=300, k=500)
QUICK = Mode(train_points=1000, epochs=2, points=30, steps=40, k=50)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def variants(sigmas: list[float]) -> dict[str, dict[str, Any]]:
    """The ``inference`` settings of each encoder."""
    denoising = {f"denoising (sigma {sigma:g})": {"denoise": sigma} for sigma in sigmas}
    return {"plain": {}, **denoising, "weight-normalised": {"weight_norm": True}}


def config_for(mode: Mode, inference: dict[str, Any]) -> Config:
    return load_config(
        None,
        {
            "model": {"preset": "kingma-welling"},
            "data": {"subset": mode.train_points, "validation_fraction": 0.0},
            "inference": inference,
            "train": {"epochs": mode.epochs, "seed": SEED},
        },
    )


def measure(mode: Mode, name: str, config: Config, splits: Any) -> dict[str, Any]:
    """Train one variant and decompose its gaps on training and on test points."""
    torch.manual_seed(SEED)
    model = build_model(config, splits.train.dim)
    posterior = build_posterior(config, model, len(splits.train))
    log(f"{name}: training {mode.epochs} epochs on {len(splits.train)} images")
    start = time.perf_counter()
    history = fit(model, posterior, splits.train, epochs=mode.epochs, batch_size=config.train.batch_size,
                  lr=config.train.lr, generator=torch.Generator().manual_seed(SEED))  # fmt: skip
    seconds = time.perf_counter() - start
    for p in model.parameters():
        p.requires_grad_(False)
    record: dict[str, Any] = {"train_seconds": seconds, "final_train_elbo": history.train[-1].elbo}
    points = {
        "train": splits.train.binarized(config.data.seed + 2).x[: mode.points],
        "test": splits.test.x[: mode.points],
    }
    for split, x in points.items():
        log(f"{name}: gap decomposition on {len(x)} {split} points ({mode.steps} steps)")
        torch.manual_seed(SEED + 1)
        record[split] = gap_decomposition(model, posterior, x, k=mode.k, steps=mode.steps)._asdict()
    train, test = record["train"], record["test"]
    record["generalisation_gap"] = test["amortization_gap"] - train["amortization_gap"]
    record["generalisation_gap_stderr"] = math.hypot(test["amortization_gap_stderr"], train["amortization_gap_stderr"])
    return record


def markdown(report: dict[str, Any]) -> str:
    """The results as a Markdown table and a note on which encoder changed the test gap."""
    rows = [
        "| encoder | amortization gap, train | amortization gap, test | test - train | approximation gap, test "
        "| test ELBO (encoder) | test log p(x) (IWAE from q*) | train seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["encoders"].items():
        tr, te = r["train"], r["test"]
        rows.append(
            f"| {name} | {tr['amortization_gap']:.2f} ± {tr['amortization_gap_stderr']:.2f} "
            f"| {te['amortization_gap']:.2f} ± {te['amortization_gap_stderr']:.2f} "
            f"| {r['generalisation_gap']:.2f} ± {r['generalisation_gap_stderr']:.2f} "
            f"| {te['approximation_gap']:.2f} ± {te['approximation_gap_stderr']:.2f} "
            f"| {te['elbo_amortized']:.2f} | {te['log_likelihood']:.2f} | {r['train_seconds']:.0f} |"
        )
    m = report["mode"]
    lines = [
        f"# Encoder generalisation: amortization gap on training and test points{' (quick mode)' if report['quick'] else ''}",
        "",
        f"MNIST, VAE 784-400-20 (kingma-welling), trained {m['epochs']} epochs on {m['train_points']} training "
        f"images; gaps on {m['points']} training and {m['points']} test images, q* from {m['steps']} "
        f"per-datapoint Adam steps started at the encoder's output, log p(x) by IWAE with k={m['k']} from q*. "
        "Nats per point, ± one standard error over points.",
        "",
        *rows,
        "",
        *report["notes"],
        "",
        f"torch {report['torch_version']}, {report['threads']} thread, {report['seconds']:.0f} s in all "
        f"({report['timestamp']}). Produced by `python benchmarks/generalization.py{' --quick' if report['quick'] else ''}`.",
    ]
    return "\n".join(lines) + "\n"


def notes(encoders: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per regularised encoder: its test amortization gap against the plain one's."""
    plain = encoders["plain"]["test"]
    out = []
    for name, r in encoders.items():
        if name == "plain":
            continue
        test = r["test"]
        change = test["amortization_gap"] - plain["amortization_gap"]
        se = math.hypot(test["amortization_gap_stderr"], plain["amortization_gap_stderr"])
        verdict = (
            "reduced"
            if change < -2 * se
            else "increased"
            if change > 2 * se
            else "did not change (within 2 standard errors)"
        )
        generalisation = r["generalisation_gap"] - encoders["plain"]["generalisation_gap"]
        generalisation_se = math.hypot(r["generalisation_gap_stderr"], encoders["plain"]["generalisation_gap_stderr"])
        out.append(
            f"- {name}: test amortization gap {verdict}: {change:+.2f} ± {se:.2f} nats "
            f"({100 * change / plain['amortization_gap']:+.0f}% of the plain encoder's "
            f"{plain['amortization_gap']:.2f}); test - train gap {generalisation:+.2f} ± {generalisation_se:.2f} "
            f"nats; test log p(x) {test['log_likelihood'] - plain['log_likelihood']:+.2f} nats."
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images, 2 epochs, 30 points (< 1 minute)")
    parser.add_argument(
        "--sigma", type=float, nargs="+", default=[0.1, 0.3], help="noise stds of the denoising encoders"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes (and the .md beside it)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    mode = QUICK if args.quick else FULL
    started = time.perf_counter()
    configs = {name: config_for(mode, inference) for name, inference in variants(args.sigma).items()}
    splits = load_splits(next(iter(configs.values())))  # the data settings are the same for all
    encoders = {name: measure(mode, name, config, splits) for name, config in configs.items()}
    report = {
        "encoders": encoders,
        "notes": notes(encoders),
        "mode": asdict(mode),
        "sigmas": args.sigma,
        "quick": args.quick,
        "data": "MNIST: first train_points of avi's shuffled training split (dynamic binarisation); "
        "gap points: the first of them with one fixed binarisation, and the first test images",
        **run_facts(started),
    }
    table = markdown(report)
    write_report(args.out, report, table)
    print(table)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
