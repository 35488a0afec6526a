"""Reproduce Burda, Grosse and Salakhutdinov (2016), Table 1, one stochastic layer, on this machine.

Trains the 784-200-200-50 tanh model as a VAE (k=1) and as an IWAE (k=5) with dynamic
binarisation, Adam (eps 1e-4) and their schedule (stage i = 0..7 lasts 3^i passes at
lr * 10^(-i/7); 3,280 passes), then reports the test NLL from the k=5000 IWAE bound and the
active units. Runs resume from their checkpoints, so the reproduction continues across calls
(and sessions) until every pass is done:

    python benchmarks/reproduce_burda.py --hours 1.5     # train for at most 1.5 h, then evaluate
    python benchmarks/reproduce_burda.py --quick         # a smoke run of a few passes

Published (Table 1, dynamic binarisation): VAE k=1 86.76 nats (19 active units);
IWAE k=5 85.54 (22 active units).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from avi.evaluation import active_units
from avi.runs.config import load_config
from avi.runs.evaluate import run_evaluate
from avi.runs.rundir import CHECKPOINT, read_json
from avi.runs.train import load_trained, run_fit

PUBLISHED = {"vae_k1": {"nll": 86.76, "active_units": 19}, "iwae_k5": {"nll": 85.54, "active_units": 22}}
PASSES = 3280


def config_for(name: str, *, batch_size: int, lr: float, threads: int):
    objective = {"name": "elbo"} if name == "vae_k1" else {"name": "iwae", "k": 5}
    return load_config(
        None,
        {
            "model": {"preset": "burda-1l"},
            "data": {"validation_fraction": 0.0},  # Burda et al. train on all 60,000 images
            "objective": objective,
            "train": {
                "epochs": PASSES,
                "batch_size": batch_size,
                "lr": lr,
                "lr_schedule": "burda",
                "adam_eps": 1e-4,
                "threads": threads,
            },
        },
    )


def epochs_done(run_dir: Path) -> int:
    summary = run_dir / "summary.json"
    return read_json(summary)["epochs_done"] if summary.exists() else 0


def train(run_dir: Path, config, *, deadline: float, chunk: int, max_epochs: int) -> None:
    """Train in chunks of ``chunk`` epochs until ``max_epochs`` are done or the deadline passes."""
    while time.monotonic() < deadline:
        done = epochs_done(run_dir)
        if done >= max_epochs:
            return
        target = min(done + chunk, max_epochs)
        if (run_dir / CHECKPOINT).exists():
            run_fit(run_dir=run_dir, resume=True, epochs=target)
        else:
            run_fit(config, run_dir, epochs=target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few passes, small evaluation (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reproduce_burda.json"))
    parser.add_argument("--state", type=Path, default=Path("benchmarks/state/reproduce_burda"))
    parser.add_argument("--hours", type=float, default=1.0, help="training time budget of this call, both runs")
    parser.add_argument("--batch-size", type=int, default=100, help="Burda et al. used 20")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial learning rate of the schedule")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=5000, help="importance samples of the test NLL")
    parser.add_argument("--only", choices=sorted(PUBLISHED), help="train and evaluate one of the two runs")
    args = parser.parse_args()
    if args.quick:
        args.state = args.state.with_name(args.state.name + "-quick")
        args.k, args.hours = 50, 1.0
    names = [args.only] if args.only else sorted(PUBLISHED)
    results = {}
    budget = args.hours * 3600 / len(names)
    for name in names:
        run_dir = args.state / name
        config = config_for(name, batch_size=args.batch_size, lr=args.lr, threads=args.threads)
        started = time.monotonic()
        train(run_dir, config, deadline=started + budget, chunk=2 if args.quick else 10,
              max_epochs=2 if args.quick else PASSES)  # fmt: skip
        evaluation = run_evaluate(run_dir, k=args.k)
        run = load_trained(run_dir)
        test_x = run.splits.test.x[:1000] if args.quick else run.splits.test.x
        summary = read_json(run_dir / "summary.json")
        results[name] = {
            "passes_done": summary["epochs_done"],
            "passes_total": PASSES,
            "train_wall_seconds": summary.get("wall_seconds"),
            "test_nll": -evaluation["log_likelihood"],
            "test_nll_stderr": evaluation["log_likelihood_stderr"],
            "test_elbo": evaluation["elbo"],
            "active_units": active_units(run.posterior, test_x),
            "k": args.k,
            "published_nll": PUBLISHED[name]["nll"],
            "published_active_units": PUBLISHED[name]["active_units"],
        }
    report = {
        "benchmark": "reproduce_burda",
        "quick": args.quick,
        "vae_k1_test_nll": results.get("vae_k1", {}).get("test_nll"),
        "iwae_k5_test_nll": results.get("iwae_k5", {}).get("test_nll"),
        "runs": results,
        "settings": {"batch_size": args.batch_size, "lr": args.lr, "adam_eps": 1e-4, "schedule": "burda 3^i",
                     "binarisation": "dynamic (train), one fixed draw (test)", "validation": "none, 60,000 train"},
        "machine": {"torch": torch.__version__, "threads": args.threads, "platform": platform.platform()},
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name}: {r['passes_done']}/{PASSES} passes, test NLL {r['test_nll']:.2f} "
              f"(published {r['published_nll']}), active units {r['active_units']} (published {r['published_active_units']})")  # fmt: skip


if __name__ == "__main__":
    main()
