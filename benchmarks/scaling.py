"""Data-parallel scaling: training examples per second for 1 and 2 processes (and a GPU).

Setup: the default job's VAE (784-400-20 MLP decoder, mean-field Gaussian q, encoder 784-400-40,
one-sample ELBO with analytic KL, Adam, batch 100) on the first ``points`` dynamically
binarised MNIST training images, trained by ``avi fit`` for ``epochs`` epochs in a fresh
interpreter per configuration:

- ``1 process x 1 thread`` and ``1 process x 2 threads``: ``python -m avi fit``;
- ``2 processes x 1 thread``: ``torchrun --standalone --nproc_per_node 2 -m avi fit`` (gloo on
  loopback; each process takes 50 points of every batch of 100, DDP averages the gradients);
- ``1 process on cuda``, where a CUDA GPU is available.

Measured: examples per second of training (``examples_per_second`` in ``metrics.csv``: the
global batch's points over rank 0's time in the training loop, validation excluded), the
median over epochs after the first (warm-up), and the wall time of the whole command
(interpreter start, data loading, rendezvous included). Timings on a shared machine are noisy:
other processes compete for the cores.

Usage: ``python benchmarks/scaling.py [--quick] [--out PATH]``; ``--quick`` runs in under a minute.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from machine import run_facts, write_report

DEFAULT_OUT = Path(__file__).parent / "results" / "scaling.json"

JOB = """
[data]
subset = {points}
[train]
epochs = {epochs}
batch_size = 100
threads = {threads}
device = "{device}"
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(name: str, processes: int, threads: int, device: str, points: int, epochs: int, work: Path) -> dict[str, Any]:
    """Train once as described; examples per second from rank 0's metrics."""
    config = work / f"{name}.toml"
    config.write_text(JOB.format(points=points, epochs=epochs, threads=threads, device=device))
    out = work / name
    fit = ["-m", "avi", "fit", str(config), "--out", str(out)]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *launcher, *fit], env=env, capture_output=True, text=True, timeout=3600, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-2000:]}")
    with (out / "metrics.csv").open() as f:
        rates = [float(row["examples_per_second"]) for row in csv.DictReader(f)]
    measured = rates[1:] or rates
    row = {
        "processes": processes,
        "threads_per_process": threads,
        "device": device,
        "examples_per_second": statistics.median(measured),
        "examples_per_second_per_epoch": rates,
        "wall_seconds": wall,
    }
    log(f"{name:>24}: {row['examples_per_second']:8.0f} examples/s (epochs {', '.join(f'{r:.0f}' for r in rates)}), {wall:.1f} s wall")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 images, 2 epochs (< 1 minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args()
    points, epochs = (3000, 2) if args.quick else (10000, 3)
    runs = {"1 process x 1 thread": (1, 1, "cpu"), "1 process x 2 threads": (1, 2, "cpu"), "2 processes x 1 thread": (2, 1, "cpu")}
    if torch.cuda.is_available():
        runs["1 process on cuda"] = (1, 1, "cuda")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        results = {name: measure(name, *spec, points, epochs, Path(work)) for name, spec in runs.items()}
    base = results["1 process x 1 thread"]["examples_per_second"]
    for row in results.values():
        row["speedup_over_1x1"] = row["examples_per_second"] / base
    report = {
        "runs": results,
        "points": points,
        "epochs": epochs,
        "batch_size": 100,
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **run_facts(started),
    }
    del report["threads"]  # each run sets its own
    write_report(args.out, report)
    log(f"wrote {args.out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
