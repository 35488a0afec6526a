"""Training steps per second of avi's loop with ``train.compile`` (``avi fit --compile``) against
the same loop eager, at the paper's settings of Burda, Grosse and Salakhutdinov (2016).

Model and objective are those of ``benchmarks/reproduce_burda.py`` (the ``burda-1l`` preset,
784-200-200-50 tanh, batch 20, Adam with eps 1e-4, fp32): the VAE (ELBO, analytic KL) and the
IWAE with k = 5. Each variant is :func:`avi.inference.train_epoch` on its :class:`~avi.inference.TrainState`
over the same MNIST subset (``steps * 20`` images, dynamic binarisation), the compiled one with
``replicas=Replicas(step=compile_step(ShardStep(model, posterior), data))`` as
``avi.runs.train.run_fit`` builds it; its compilation happens in the warm-up round
(``compile_seconds``: that round's time less a compiled round's median; paid once per run or
resume). Eager and compiled rounds alternate in one process; reported are the median over rounds
of steps/s and the median of the per-round ratios compiled / eager (which cancels drift in the
machine's speed between rounds, so it differs from the ratio of the medians), on one thread by
default (a reproduction run trains on one core beside another).

Usage: ``python benchmarks/compile.py [--quick] [--threads N] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from machine import cpu_name, run_facts, write_report
from reproduce_burda import config_for

from avi.data import Dataset, load_mnist
from avi.inference import TrainState, compile_step, make_optimizers, train_epoch
from avi.inference.loop import Replicas
from avi.inference.parallel import ShardStep
from avi.runs.build import build_model, build_objective, build_posterior

DEFAULT_OUT = Path(__file__).parent / "results" / "compile.json"
BATCH = 20


def measure(name: str, data: Dataset, rounds: int) -> dict:
    """Median steps/s of eager and compiled training of run ``name`` (vae_k1 or iwae_k5)."""
    config = config_for(name, batch_size=BATCH, lr=1e-3, threads=torch.get_num_threads(), precision="fp32")
    generator = torch.Generator().manual_seed(0)  # one batch order and binarisation stream for both
    variants: dict[str, tuple[TrainState, Replicas]] = {}
    for variant in ("eager", "compiled"):
        torch.manual_seed(0)
        model = build_model(config, data.x.shape[1])
        posterior = build_posterior(config, model, len(data))
        optimizers = make_optimizers(model, posterior, lr=1e-3, local_lr=config.inference.local_lr, eps=1e-4)
        step = compile_step(ShardStep(model, posterior), data) if variant == "compiled" else None
        variants[variant] = (TrainState(model, posterior, optimizers, generator), Replicas(step=step))
    objective = build_objective(config)
    steps = len(data) // BATCH

    def epoch(variant: str) -> float:
        state, replicas = variants[variant]
        started = time.perf_counter()
        train_epoch(state, data, objective, batch_size=BATCH, replicas=replicas)
        return steps / (time.perf_counter() - started)

    first_round = steps / epoch("compiled")  # seconds, compilation included
    epoch("eager")
    rates: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(rounds):
        for variant in rates:
            rates[variant].append(epoch(variant))
    ratios = [c / e for c, e in zip(rates["compiled"], rates["eager"])]
    return {
        "eager_steps_per_second": statistics.median(rates["eager"]),
        "compiled_steps_per_second": statistics.median(rates["compiled"]),
        "compiled_ratio_vs_eager": statistics.median(ratios),
        "ratios": ratios,
        "compile_seconds": first_round - steps / statistics.median(rates["compiled"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few short rounds (under a minute after compiling)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    x, _ = load_mnist()["train"]
    steps, rounds = (50, 3) if args.quick else (300, 7)
    data = Dataset(torch.from_numpy(x[: steps * BATCH]).float() / 255, dynamic=True)
    report = {"batch_size": BATCH, "steps_per_round": steps, "rounds": rounds, "cpu": cpu_name()}
    for name in ("vae_k1", "iwae_k5"):
        report[name] = measure(name, data, rounds)
        r = report[name]
        print(f"{name}: eager {r['eager_steps_per_second']:.0f} steps/s, compiled {r['compiled_steps_per_second']:.0f} "
              f"({r['compiled_ratio_vs_eager']:.2f}x; compiling took {r['compile_seconds']:.0f} s)")  # fmt: skip
    report.update(run_facts(started))
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
