"""Consistency regularisation (Sinha and Dieng 2021): is the representation more consistent under
small transforms, and are the digit labels more linearly decodable from it?

Setup: the ``kingma-welling`` VAE (784-400-20, mean-field Gaussian q) on a subset of the MNIST
training images (dynamically binarised), trained by :func:`avi.inference.fit` (Adam 1e-3, batch
100) on the one-sample ELBO, or on the ELBO minus ``weight`` * KL(q(z|x) || q(z|t(x))) with t a
random translation (up to 2 pixels) or rotation (up to 15 degrees), as
``avi fit --consistency WEIGHT --transform NAME`` does. Same data, seed and schedule for all.

Measured on the first ``test_points`` MNIST test images (avi's fixed binarisation):

- the consistency KL, mean over points of KL(q(z|x) || q(z|t(x))) for t a random translation
  and a random rotation (one draw per point, seeded; ± standard error over points);
- the linear-probe accuracy: a multinomial logistic regression (L-BFGS, small L2) fitted to
  the posterior means E_q[z|x] of the training images (one fixed binarisation) and their
  labels, scored on the test images' posterior means;
- the test ELBO (analytic KL, 10 samples per point), to see what the penalty costs the bound.

Usage: ``python benchmarks/consistency.py [--quick] [--weight W] [--out PATH]``; writes JSON and
a Markdown table (same name, ``.md``). torch runs on one thread (shared cores).
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

from avi.data.transforms import TRANSFORMS, make_transform
from avi.evaluation import elbo_per_point
from avi.evaluation.consistency import consistency_kl, linear_probe_accuracy, posterior_means
from avi.inference import fit
from avi.runs.build import build_model, build_objective, build_posterior, load_splits
from avi.runs.config import Config, load_config

THREADS = 1
SEED = 0
DEFAULT_OUT = Path(__file__).parent / "results" / "consistency.json"


@dataclass(frozen=True)
class Mode:
    train_points: int
    epochs: int
    test_points: int


FULL = Mode(train_points=10_000, epochs=10, test_points=5000)
QUICK = Mode(train_points=1000, epochs=1, test_points=500)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def config_for(mode: Mode, weight: float, transform: str | None) -> Config:
    return load_config(
        None,
        {
            "model": {"preset": "kingma-welling"},
            "data": {"subset": mode.train_points, "validation_fraction": 0.0},
            "inference": {"consistency": weight, "transform": transform},
            "train": {"epochs": mode.epochs, "seed": SEED},
        },
    )


def measure(mode: Mode, name: str, config: Config, splits: Any) -> dict[str, Any]:
    """Train one variant; its consistency KLs, linear-probe accuracy and test ELBO."""
    torch.manual_seed(SEED)
    model = build_model(config, splits.train.dim)
    posterior = build_posterior(config, model, len(splits.train))
    log(f"{name}: training {mode.epochs} epochs on {len(splits.train)} images")
    start = time.perf_counter()
    fit(model, posterior, splits.train, epochs=mode.epochs, batch_size=config.train.batch_size, lr=config.train.lr,
        objective=build_objective(config, posterior), generator=torch.Generator().manual_seed(SEED))  # fmt: skip
    seconds = time.perf_counter() - start
    test, test_labels = splits.test.x[: mode.test_points], splits.test.labels[: mode.test_points]
    train = splits.train.binarized(config.data.seed + 2)
    record: dict[str, Any] = {"train_seconds": seconds}
    for transform in TRANSFORMS:
        torch.manual_seed(SEED + 1)
        kl = consistency_kl(posterior, test, make_transform(transform))
        record[f"consistency_kl_{transform}"] = kl.mean().item()
        record[f"consistency_kl_{transform}_stderr"] = (kl.std() / math.sqrt(kl.numel())).item()
    record["probe_accuracy"] = linear_probe_accuracy(
        posterior_means(posterior, train.x), train.labels, posterior_means(posterior, test), test_labels
    )
    torch.manual_seed(SEED + 2)
    record["test_elbo"] = elbo_per_point(model, posterior, test, num_samples=10)[0].mean().item()
    return record


def markdown(report: dict[str, Any]) -> str:
    m = report["mode"]
    rows = [
        "| training | consistency KL, translate | consistency KL, rotate | linear-probe accuracy | test ELBO | train seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["variants"].items():
        rows.append(
            f"| {name} | {r['consistency_kl_translate']:.3f} ± {r['consistency_kl_translate_stderr']:.3f} "
            f"| {r['consistency_kl_rotate']:.3f} ± {r['consistency_kl_rotate_stderr']:.3f} "
            f"| {100 * r['probe_accuracy']:.1f}% | {r['test_elbo']:.2f} | {r['train_seconds']:.0f} |"
        )
    # binomial standard error of an accuracy near p on n test points: sqrt(p (1 - p) / n)
    p = report["variants"]["ELBO"]["probe_accuracy"]
    se = math.sqrt(p * (1 - p) / m["test_points"])
    lines = [
        f"# Consistency regularisation on MNIST{' (quick mode)' if report['quick'] else ''}",
        "",
        f"VAE 784-400-20 (kingma-welling), trained {m['epochs']} epochs on {m['train_points']} training images, "
        f"penalty weight {report['weight']:g}; metrics on {m['test_points']} test images. Consistency KL: "
        "mean of KL(q(z|x) || q(z|t(x))) in nats, ± standard error over points. Linear probe: logistic "
        f"regression on posterior means, fitted on the training images (accuracy standard error about "
        f"{100 * se:.1f} points).",
        "",
        *rows,
        "",
        *report["notes"],
        "",
        f"torch {report['torch_version']}, {report['threads']} thread, {report['seconds']:.0f} s in all "
        f"({report['timestamp']}). Produced by `python benchmarks/consistency.py{' --quick' if report['quick'] else ''}`.",
    ]
    return "\n".join(lines) + "\n"


def notes(variants: dict[str, dict[str, Any]]) -> list[str]:
    base = variants["ELBO"]
    out = []
    for name, r in variants.items():
        if name == "ELBO":
            continue
        parts = [
            f"consistency KL under {t} {r[f'consistency_kl_{t}']:.3f} vs {base[f'consistency_kl_{t}']:.3f}"
            for t in TRANSFORMS
        ]
        out.append(
            f"- {name}: {', '.join(parts)}; probe accuracy {100 * (r['probe_accuracy'] - base['probe_accuracy']):+.1f} "
            f"points; test ELBO {r['test_elbo'] - base['test_elbo']:+.2f} nats."
        )
    out.append(
        "- Sinha and Dieng (2021) report that consistency regularisation makes the encoder more "
        "consistent and improves downstream (linear) classification from the representation; "
        "compare the signs above with that direction."
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images, 1 epoch, 500 test points (< 1 minute)")
    parser.add_argument("--weight", type=float, default=1.0, help="consistency penalty weight")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes (and the .md beside it)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    mode = QUICK if args.quick else FULL
    started = time.perf_counter()
    configs = {"ELBO": config_for(mode, 0.0, None)}
    for transform in TRANSFORMS:
        configs[f"ELBO + consistency ({transform})"] = config_for(mode, args.weight, transform)
    splits = load_splits(configs["ELBO"])
    variants = {name: measure(mode, name, config, splits) for name, config in configs.items()}
    report = {
        "variants": variants,
        "notes": notes(variants),
        "mode": asdict(mode),
        "weight": args.weight,
        "quick": args.quick,
        "data": "MNIST: first train_points of avi's shuffled training split (dynamic binarisation); "
        "metrics on the first test_points test images (fixed binarisation)",
        **run_facts(started),
    }
    table = markdown(report)
    write_report(args.out, report, table)
    print(table)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
