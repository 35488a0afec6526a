"""Training steps per second of avi's loop against a plain PyTorch loop and Pyro's SVI.

Every variant trains the same 784-400-20 VAE on MNIST (bytes / 255, dynamic binarisation:
a fresh Bernoulli draw of each batch), with one reparameterised sample and Adam at lr 1e-3:

- ``avi``: :func:`avi.inference.train_epoch` (each step :func:`avi.inference.train_step`) on a
  :class:`~avi.inference.TrainState` with :func:`avi.inference.make_optimizers`,
  ``ELBO()`` (analytic KL), ``AmortizedPosterior(mlp_encoder(784, (400,), 40),
  MeanFieldGaussian(20))`` and ``VAEModel(784, 20, (400,))`` (Bernoulli). One round is one
  ``train_epoch`` over a data subset of ``steps * batch`` points, so the timing includes
  everything the loop does: shuffling, batching, binarisation, metric sums.
- ``avi_bf16``: the same with ``set_precision("bf16", ...)``: the networks' products in bfloat16
  under autocast, the bound in float32 (``avi fit --precision bf16``). Skipped, with null
  results, where the CPU has no native bf16 (:func:`avi.precision.bf16_supported`).
- ``plain``: the loop one writes by hand (the PyTorch VAE example, with distributions):
  torch.distributions with default settings (argument validation on), ``Independent(Normal)``
  and ``Independent(Bernoulli)``, analytic ``kl_divergence``, ``torch.optim.Adam`` defaults,
  ``loss.item()`` summed every step.
- ``pyro_trace_elbo`` / ``pyro_mean_field``: Pyro's SVI with ``Trace_ELBO`` (Monte Carlo KL)
  and ``TraceMeanField_ELBO`` (analytic KL), ``pyro.optim.Adam({"lr": 1e-3})``, the model and
  guide of Pyro's VAE example (summed over a plate). Skipped, with null results, without Pyro.

The variants run interleaved in one process (A B C D, A B C D, ...), each a fixed number of
steps per round after a warm-up, on ``torch.set_num_threads(2)``. Reported: the median over
rounds of steps/s and, for ratios against ``plain``, the median over rounds of the per-round
ratio (which cancels drift in the machine's speed between rounds). The best round of each variant
is reported too: on a shared machine, other processes slow two-thread loops by up to 100x in
bursts, and the best round is the least disturbed. The CPUs that other processes on this machine
kept busy during the measurement are recorded (``other_processes_cpus``, from /proc/stat); slowdowns
from outside the machine (its host) do not show there, only as drift between rounds.
Importing Pyro registers its own KL for (Independent, Independent) in torch's table, so in this
process avi and plain use Pyro's version of that (equivalent) function.

Usage: ``python benchmarks/train_step.py [--quick] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from machine import cpu_name, cpu_snapshot, matmul_gflops, other_processes_cpus, run_facts, write_report

from avi.data import Dataset, load_mnist
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.families import MeanFieldGaussian
from avi.inference import TrainState, make_optimizers, train_epoch
from avi.models import VAEModel
from avi.objectives import ELBO
from avi.precision import bf16_supported, set_precision

try:
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
except ImportError:  # pyro-ppl is a benchmark-only extra
    pyro = None

DATA_DIM, HIDDEN, LATENT = 784, 400, 20
LR = 1e-3
THREADS = 2
DEFAULT_OUT = Path(__file__).parent / "results" / "train_step.json"
# (rounds, {batch size: steps per round}, warm-up steps)
FULL = (11, {100: 200, 1000: 30}, 20)
QUICK = (3, {100: 50, 1000: 8}, 5)

#: a runner trains for ``steps`` steps and returns (seconds, mean training ELBO per point)
Runner = Callable[[int], tuple[float, float]]


def _timed(run: Callable[[], float]) -> tuple[float, float]:
    gc.collect()
    start = time.perf_counter()
    elbo = run()
    return time.perf_counter() - start, elbo


def avi_runner(x: Tensor, batch: int, precision: str = "fp32") -> Runner:
    """avi's own loop: train_epoch on a TrainState over the first ``steps * batch`` points."""
    model = VAEModel(DATA_DIM, LATENT, (HIDDEN,), likelihood="bernoulli")
    posterior = AmortizedPosterior(
        mlp_encoder(DATA_DIM, (HIDDEN,), 2 * LATENT), MeanFieldGaussian(LATENT)
    )
    set_precision(precision, model, posterior)
    optimizers = make_optimizers(model, posterior, lr=LR)
    state = TrainState(model, posterior, optimizers, torch.Generator().manual_seed(1))
    objective = ELBO()
    subsets: dict[int, Dataset] = {}

    def run(steps: int) -> tuple[float, float]:
        if steps not in subsets:  # built outside the timed region
            subsets[steps] = Dataset(x[: steps * batch].clone(), dynamic=True)
        data = subsets[steps]
        return _timed(lambda: train_epoch(state, data, objective, batch_size=batch).elbo)

    return run


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_out))


def plain_runner(x: Tensor, batch: int) -> Runner:
    """The hand-written PyTorch loop, torch.distributions with default (validating) settings."""
    encoder, decoder = _mlp(DATA_DIM, 2 * LATENT), _mlp(LATENT, DATA_DIM)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=LR)
    prior = Independent(Normal(torch.zeros(LATENT), torch.ones(LATENT)), 1)

    def epoch(data: Tensor) -> float:
        total = 0.0
        for index in torch.randperm(len(data)).split(batch):
            xb = torch.bernoulli(data[index])
            loc, raw_scale = encoder(xb).split(LATENT, dim=-1)
            q = Independent(Normal(loc, F.softplus(raw_scale)), 1)
            z = q.rsample()
            likelihood = Independent(Bernoulli(logits=decoder(z)), 1)
            loss = -(likelihood.log_prob(xb) - kl_divergence(q, prior)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        return -total / len(data)

    return lambda steps: _timed(lambda: epoch(x[: steps * batch]))


def pyro_runner(x: Tensor, batch: int, loss: str) -> Runner:
    """Pyro's SVI on the model and guide of Pyro's VAE example (same networks, softplus scale)."""
    encoder, decoder = _mlp(DATA_DIM, 2 * LATENT), _mlp(LATENT, DATA_DIM)
    prefix = f"{loss}_b{batch}"  # Pyro's parameter store is global: keep variants apart

    def model(xb: Tensor) -> None:
        pyro.module(f"{prefix}_decoder", decoder)
        with pyro.plate("data", xb.shape[0]):
            z = pyro.sample(
                "z", pdist.Normal(xb.new_zeros(LATENT), xb.new_ones(LATENT)).to_event(1)
            )
            pyro.sample("x", pdist.Bernoulli(logits=decoder(z)).to_event(1), obs=xb)

    def guide(xb: Tensor) -> None:
        pyro.module(f"{prefix}_encoder", encoder)
        loc, raw_scale = encoder(xb).split(LATENT, dim=-1)
        with pyro.plate("data", xb.shape[0]):
            pyro.sample("z", pdist.Normal(loc, F.softplus(raw_scale)).to_event(1))

    elbo = {"trace": Trace_ELBO, "mean_field": TraceMeanField_ELBO}[loss]()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), loss=elbo)

    def epoch(data: Tensor) -> float:
        total = 0.0
        for index in torch.randperm(len(data)).split(batch):
            total += svi.step(torch.bernoulli(data[index]))
        return -total / len(data)

    return lambda steps: _timed(lambda: epoch(x[: steps * batch]))


def measure(x: Tensor, batch: int, steps: int, rounds: int, warmup: int) -> dict:
    """Interleaved rounds of every variant at one batch size: steps/s per round and medians."""
    runners: dict[str, Runner] = {"avi": avi_runner(x, batch), "plain": plain_runner(x, batch)}
    if bf16_supported(torch.device("cpu")):
        runners["avi_bf16"] = avi_runner(x, batch, "bf16")
    if pyro is not None:
        runners["pyro_trace_elbo"] = pyro_runner(x, batch, "trace")
        runners["pyro_mean_field"] = pyro_runner(x, batch, "mean_field")
    for run in runners.values():
        run(warmup)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    elbos: dict[str, float] = {}
    for i in range(rounds):
        for name, run in runners.items():
            seconds, elbos[name] = run(steps)
            rates[name].append(steps / seconds)
        progress = ", ".join(f"{name} {rate[-1]:.0f}" for name, rate in rates.items())
        print(f"batch {batch} round {i + 1}/{rounds}: {progress} steps/s", file=sys.stderr)
    result: dict = {"batch_size": batch, "steps_per_round": steps, "warmup_steps": warmup}
    for name, per_round in rates.items():
        ratios = [r / p for r, p in zip(per_round, rates["plain"])]
        result[name] = {
            "steps_per_s": statistics.median(per_round),
            "ratio_vs_plain": statistics.median(ratios),
            "best_steps_per_s": max(per_round),
            "best_ratio_vs_plain": max(per_round) / max(rates["plain"]),
            "steps_per_s_per_round": per_round,
            "last_round_train_elbo": elbos[name],
        }
    for name in ("avi_bf16", "pyro_trace_elbo", "pyro_mean_field"):
        result.setdefault(name, None)
    return result


def _field(results: dict, batch: int, name: str, key: str) -> float | None:
    entry = results[str(batch)][name]
    return None if entry is None else entry[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few short rounds (under a minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args()
    rounds, steps, warmup = QUICK if args.quick else FULL

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    x = torch.from_numpy(load_mnist()["train"][0]).float() / 255

    peak = {"fp32": matmul_gflops(torch.float32)}
    if bf16_supported(torch.device("cpu")):
        peak["bf16"] = matmul_gflops(torch.bfloat16)
    load_before = os.getloadavg()
    before = cpu_snapshot()
    started = time.perf_counter()
    results = {str(b): measure(x, b, s, rounds, warmup) for b, s in steps.items()}
    facts = run_facts(started)
    others = other_processes_cpus(before)
    summary = {
        "avi_steps_per_s": _field(results, 100, "avi", "steps_per_s"),
        "plain_steps_per_s": _field(results, 100, "plain", "steps_per_s"),
        "pyro_trace_elbo_steps_per_s": _field(results, 100, "pyro_trace_elbo", "steps_per_s"),
        "pyro_mean_field_steps_per_s": _field(results, 100, "pyro_mean_field", "steps_per_s"),
        "fp32_b100_ratio_vs_plain": _field(results, 100, "avi", "ratio_vs_plain"),
        "fp32_b1000_ratio_vs_plain": _field(results, 1000, "avi", "ratio_vs_plain"),
        "bf16_b100_ratio_vs_plain": _field(results, 100, "avi_bf16", "ratio_vs_plain"),
        "bf16_b1000_ratio_vs_plain": _field(results, 1000, "avi_bf16", "ratio_vs_plain"),
        "pyro_trace_elbo_b100_ratio_vs_plain": _field(
            results, 100, "pyro_trace_elbo", "ratio_vs_plain"
        ),
        "pyro_mean_field_b100_ratio_vs_plain": _field(
            results, 100, "pyro_mean_field", "ratio_vs_plain"
        ),
        "pyro_trace_elbo_b1000_ratio_vs_plain": _field(
            results, 1000, "pyro_trace_elbo", "ratio_vs_plain"
        ),
        "pyro_mean_field_b1000_ratio_vs_plain": _field(
            results, 1000, "pyro_mean_field", "ratio_vs_plain"
        ),
    }
    report = {
        **summary,
        "results": results,
        "model": "VAE 784-400-20, Bernoulli likelihood, mean-field Gaussian q, 1 sample, Adam lr 1e-3",
        "data": "MNIST train (bytes / 255), dynamic binarisation",
        "ratio_method": "median over rounds of (variant steps/s) / (plain steps/s) in the same round",
        "quick": args.quick,
        "rounds": rounds,
        **facts,
        "machine": cpu_name(),  # the CPU's model name, not the processor type
        "pyro_version": None if pyro is None else pyro.__version__,
        "cpu_count": os.cpu_count(),
        "matmul_peak_gflops": peak,
        "load_average_1min_before": load_before[0],
        "load_average_1min_after": os.getloadavg()[0],
        "other_processes_cpus": others,
    }
    write_report(args.out, report)

    print(
        f"train steps/s, torch {torch.__version__}, {report['threads']} threads, {rounds} rounds:"
        " median (ratio to plain) and best round (ratio)"
    )
    for batch, result in results.items():
        print(f"batch {batch} ({result['steps_per_round']} steps per round):")
        for name in ("avi", "avi_bf16", "plain", "pyro_trace_elbo", "pyro_mean_field"):
            entry = result[name]
            if entry is None:
                print(f"  {name:16s}  (skipped: {'no native bf16' if name == 'avi_bf16' else 'pyro-ppl not installed'})")
                continue
            print(
                f"  {name:16s} {entry['steps_per_s']:7.1f} ({entry['ratio_vs_plain']:4.2f}x)"
                f"  best {entry['best_steps_per_s']:7.1f} ({entry['best_ratio_vs_plain']:4.2f}x)"
                f"  train ELBO {entry['last_round_train_elbo']:.1f}"
            )
    if others is not None and others > 0.1:
        print(
            f"warning: other processes kept {others:.2f} of {report['cpu_count']} CPUs busy during the run;"
            " they skew these timings"
        )
    print("matmul peak (GFLOP/s): " + ", ".join(f"{name} {gflops:.0f}" for name, gflops in peak.items()))
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
