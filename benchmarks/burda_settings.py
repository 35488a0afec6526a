"""What the fast variant's speed settings cost in NLL: batch size and precision on a short schedule.

``benchmarks/reproduce_burda.py --fast`` trains Burda et al.'s 784-200-200-50 model with batch
100 (the paper, and the script's default: 20) and, for the IWAE, bfloat16 products. This
trains the same model from the same initialisation on all 60,000 MNIST training images (dynamic
binarisation) for the first ``--passes`` passes of their schedule (stage 0 is 1 pass at lr
1e-3, stage 1 three passes at 1e-3 * 10^(-1/7)) under each setting, and reports the test NLL
(IWAE bound, ``--k`` samples, the first ``--points`` test images, one fixed binarisation) and
seconds:

- VAE (k=1): batch 20 fp32 (the paper's) against batch 100 fp32 (the fast variant's), and
  batch 100 with the learning rate scaled by sqrt(5) (the square-root rule for Adam) and by 5
  (the linear rule);
- IWAE (k=5): batch 20 fp32, batch 100 fp32, batch 100 bf16 (the fast variant's) and batch
  100 bf16 with the learning rate scaled by sqrt(5).

Each setting trains from ``--seeds`` initialisations; a difference between settings is the
difference of their mean NLLs, with a standard error from the spread over seeds (the Monte
Carlo error of the NLL on the same points is far smaller). A short schedule favours small
batches (five times the updates per pass), so a gap here is an upper estimate of what the
change costs once the 3,280 passes have converged.

Usage: ``python benchmarks/burda_settings.py [--quick] [--out PATH] [--passes N] [--only NAME,...]``;
with ``--only`` the named settings are (re)run and merged into the JSON's other results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from machine import folder_lock, write_report

from avi.data import Dataset, load_mnist
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.evaluation import log_likelihood
from avi.families import MeanFieldGaussian
from avi.inference import EpochStats, Hook, TrainState, make_optimizers, run, train_epoch
from avi.models import VAEModel
from avi.objectives import objective_named
from avi.precision import bf16_supported, set_precision
from avi.runs.config import TrainConfig
from avi.runs.hooks import LearningRate

DEFAULT_OUT = Path(__file__).parent / "results" / "burda_settings.json"
#: (name, objective, k, batch size, precision, initial learning rate)
SETTINGS = [
    ("vae_b20_fp32", "elbo", 1, 20, "fp32", 1e-3),
    ("vae_b100_fp32", "elbo", 1, 100, "fp32", 1e-3),
    ("vae_b100_fp32_lr2.2", "elbo", 1, 100, "fp32", 1e-3 * 5**0.5),  # lr scaled by sqrt(batch ratio)
    ("vae_b100_fp32_lr5", "elbo", 1, 100, "fp32", 1e-3 * 5),  # lr scaled by the batch ratio
    ("iwae_b20_fp32", "iwae", 5, 20, "fp32", 1e-3),
    ("iwae_b100_fp32", "iwae", 5, 100, "fp32", 1e-3),
    ("iwae_b100_bf16", "iwae", 5, 100, "bf16", 1e-3),
    ("iwae_b100_bf16_lr2.2", "iwae", 5, 100, "bf16", 1e-3 * 5**0.5),
]


def train_and_score(
    objective: str, k: int, batch: int, precision: str, lr: float, train_x: torch.Tensor, test_x: torch.Tensor,
    *, passes: int, eval_k: int, seed: int,
) -> dict:
    """Train from the seed's initialisation for ``passes`` passes of Burda's schedule; test NLL."""
    torch.manual_seed(seed)
    model = VAEModel(784, 50, (200, 200), activation="tanh")
    posterior = AmortizedPosterior(mlp_encoder(784, (200, 200), 100, "tanh"), MeanFieldGaussian(50))
    set_precision(precision, model, posterior)
    optimizers = make_optimizers(model, posterior, lr=lr, eps=1e-4)
    state = TrainState(model, posterior, optimizers, torch.Generator().manual_seed(seed))
    bound = objective_named(objective, k=k)
    passes_stats: list[EpochStats] = []

    def epoch(state: TrainState, data: Dataset, hooks: Sequence[Hook]) -> EpochStats:
        passes_stats.append(train_epoch(state, data, bound, batch_size=batch, hooks=hooks))
        return passes_stats[-1]

    started = time.perf_counter()
    schedule = LearningRate(TrainConfig(lr=lr, lr_schedule="burda"))  # each pass's learning rate
    run(state, Dataset(train_x, dynamic=True), epoch, epochs=passes, hooks=[schedule])
    seconds = time.perf_counter() - started
    stats = passes_stats[-1]
    set_precision("fp32", model, posterior)  # evaluation in fp32, as avi evaluate does
    torch.manual_seed(seed + 1)
    nll = -log_likelihood(model, posterior, test_x, k=eval_k).value
    return {"test_nll": nll.mean().item(), "train_elbo_last_pass": stats.elbo, "train_seconds": seconds}


def make_report(args: argparse.Namespace, results: dict[str, dict | None]) -> dict:
    """The report of all settings' results, with the NLL differences that answer the questions."""

    def difference(a: str, b: str) -> dict | None:
        """Mean NLL of b minus that of a, with a standard error from the spread over seeds (a
        rough one: with 2 seeds each spread has one degree of freedom; none with one seed)."""
        ra, rb = results.get(a), results.get(b)
        if ra is None or rb is None:
            return None
        sd = [ra["test_nll_seed_sd"], rb["test_nll_seed_sd"]]
        stderr = None if None in sd else (sd[0] ** 2 / len(ra["seeds"]) + sd[1] ** 2 / len(rb["seeds"])) ** 0.5
        return {"difference": rb["test_nll"] - ra["test_nll"], "stderr": stderr}

    comparisons = {
        "vae_batch_100_vs_20": difference("vae_b20_fp32", "vae_b100_fp32"),
        "vae_batch_100_lr2.2_vs_20": difference("vae_b20_fp32", "vae_b100_fp32_lr2.2"),
        "vae_batch_100_lr5_vs_20": difference("vae_b20_fp32", "vae_b100_fp32_lr5"),
        "iwae_batch_100_vs_20": difference("iwae_b20_fp32", "iwae_b100_fp32"),
        "iwae_bf16_vs_fp32_batch_100": difference("iwae_b100_fp32", "iwae_b100_bf16"),
        "iwae_batch_100_bf16_lr2.2_vs_20_fp32": difference("iwae_b20_fp32", "iwae_b100_bf16_lr2.2"),
    }
    return {
        "benchmark": "burda_settings", "quick": args.quick, "passes": args.passes, "test_points": args.points,
        "k": args.k, "seeds": args.seeds, "comparisons": comparisons, "results": results,
        "machine": {"torch": torch.__version__, "threads": args.threads, "platform": platform.platform(), "cpus": os.cpu_count()},
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 pass on 6,000 images, 200 test points, k=100")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated setting names to run, e.g. iwae_b100_fp32,iwae_b100_bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mnist = load_mnist()
    train_x = torch.from_numpy(mnist["train"][0]).float() / 255
    test_x = torch.bernoulli(torch.from_numpy(mnist["test"][0]).float() / 255, generator=torch.Generator().manual_seed(1))
    if args.quick:
        train_x, args.passes, args.points, args.k = train_x[:6000], 1, 200, 100
    test_x = test_x[: args.points]
    only = set(args.only.split(",")) if args.only else {name for name, *_ in SETTINGS}
    if unknown := only - {name for name, *_ in SETTINGS}:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {[name for name, *_ in SETTINGS]}")
    results: dict[str, dict | None] = {}
    for name, objective, k, batch, precision, lr in SETTINGS:
        if name not in only:
            continue
        if precision == "bf16" and not bf16_supported(torch.device("cpu")):
            results[name] = None
            continue
        runs = [train_and_score(objective, k, batch, precision, lr, train_x, test_x,
                                passes=args.passes, eval_k=args.k, seed=seed) for seed in range(args.seeds)]  # fmt: skip
        nll = torch.tensor([r["test_nll"] for r in runs], dtype=torch.float64)
        results[name] = {"test_nll": nll.mean().item(), "test_nll_seed_sd": nll.std().item() if len(runs) > 1 else None,
                         "seeds": runs}  # fmt: skip
        print(f"{name:16s} test NLL {nll.mean():7.2f} (seeds: {', '.join(f'{v:.2f}' for v in nll)})"
              f"  {sum(r['train_seconds'] for r in runs):6.0f} s", flush=True)  # fmt: skip

    with folder_lock(args.out.parent):  # other settings' processes (--only) may write the file meanwhile
        previous = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
        results = {**previous.get("results", {}), **results}
        report = make_report(args, results)
        write_report(args.out, report)
    for name, c in report["comparisons"].items():
        if c is not None:
            error = "" if c["stderr"] is None else f" ± {c['stderr']:.2f}"
            print(f"{name}: NLL difference {c['difference']:+.2f}{error} nats")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
