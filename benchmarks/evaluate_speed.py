"""Seconds for the IWAE k = 5000 evaluation of the MNIST test set with the 784-400-20 VAE.

The VAE (``VAEModel(784, 20, (400,))``, Bernoulli, mean-field encoder 784-400-40) is trained
for one epoch first, outside the timing (the speed does not depend on the weights; the
weights only make the estimate a meaningful number). The 10,000 test images (bytes / 255) are
binarised once with a fixed seed. Then, on 2 threads:

- ``fp32``: :func:`avi.evaluation.log_likelihood` with k = 5000 and its default chunks (the
  fast Bernoulli-MLP path, per-point noise streams, seed 0);
- ``bf16``: the same with ``precision="bf16"`` (the decoder under bfloat16 autocast), on the
  same samples, so the difference to fp32 is the rounding alone; skipped where the CPU has no
  native bf16;
- ``fp32_compiled`` and ``bf16_compiled``: the same with ``compile=True`` (the decoder's
  log-density through ``torch.compile``: layers, softplus and sums fused); the seconds of the
  first compiled call of the process (two points: Dynamo, Inductor and the C++ compiler, or
  Inductor's on-disk cache where an earlier process compiled the same graph) are recorded apart
  as ``compile_seconds`` and added in ``seconds_with_compile_for_10000_points``;
- ``fp32_2proc``: ``fp32`` split over 2 processes of 1 thread each, each evaluating half the
  points (2,000 of them in the full run) (as ``torchrun --nproc_per_node 2 -m avi evaluate`` does), timed from inside the
  workers (the slower one); per-point noise is seeded by (seed, point), so the estimates equal
  ``fp32``'s exactly (``two_process_max_abs_difference``);
- ``previous``: the implementation this replaced (torch.distributions log-densities through
  ``avi.objectives.log_weights``, 100 points x 500 samples per chunk), on a subset of the points,
  as the reference for the speed-up (``speedup_vs_previous`` compares points per second). It
  ran on torch's intra-op threads, which other jobs on a shared machine slow down badly, so the
  ratio mixes the two changes (the worker threads and the fast path).

Reported per variant: seconds, points per second, seconds extrapolated to the 10,000 points
(``quick`` evaluates a subset and says so), the mean estimate, and the peak resident memory
during the variant (VmHWM after resetting it through /proc/self/clear_refs) above the resident
size before it. As in ``train_step.py``, the CPUs that other processes kept busy during the
measurement are recorded (``other_processes_cpus``, from /proc/stat): the machine is shared.

Usage: ``python benchmarks/evaluate_speed.py [--quick] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from machine import cpu_name, cpu_snapshot, matmul_gflops, other_processes_cpus, run_facts, write_report

from avi.data import Dataset, load_mnist
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.evaluation import log_likelihood
from avi.evaluation.bounds import chunk_sizes
from avi.evaluation.importance import row_bytes
from avi.precision import bf16_supported
from avi.families import MeanFieldGaussian
from avi.inference import TrainState, make_optimizers, train_epoch
from avi.models import VAEModel
from avi.objectives import ELBO
from avi.objectives.bounds import log_weights

DATA_DIM, HIDDEN, LATENT, K = 784, 400, 20, 5000
THREADS = 2
TEST_POINTS = 10_000
DEFAULT_OUT = Path(__file__).parent / "results" / "evaluate_speed.json"
# (training images for the one epoch, points timed for fp32/bf16, for fp32_2proc, for previous)
FULL = (60_000, 10_000, 2_000, 200)
QUICK = (5_000, 40, 40, 4)


@torch.no_grad()
def previous_log_likelihood(model: VAEModel, posterior: nn.Module, x: Tensor, k: int) -> Tensor:
    """The IWAE estimate as avi computed it before the fast path (100 points x 500 samples per
    chunk, torch.distributions densities), per point."""
    values = []
    for start in range(0, x.shape[0], 100):
        xb = x[start : start + 100]
        q = posterior(xb)
        lse = torch.full((xb.shape[0],), -math.inf)
        for done in range(0, k, 500):
            log_lik, log_prior, log_q = log_weights(model, q, xb, min(500, k - done))
            lse = torch.logaddexp(lse, torch.logsumexp(log_lik + log_prior - log_q, 0))
        values.append(lse - math.log(k))
    return torch.cat(values)


def _build() -> tuple[VAEModel, AmortizedPosterior]:
    model = VAEModel(DATA_DIM, LATENT, (HIDDEN,))
    posterior = AmortizedPosterior(mlp_encoder(DATA_DIM, (HIDDEN,), 2 * LATENT), MeanFieldGaussian(LATENT))
    return model, posterior


def worker(state_path: Path, rank: int, world: int) -> None:
    """One of the processes of ``fp32_2proc``: evaluate this rank's contiguous shard, save the
    values and the seconds it took."""
    torch.set_num_threads(1)
    state = torch.load(state_path)
    model, posterior = _build()
    model.load_state_dict(state["model"])
    posterior.load_state_dict(state["posterior"])
    posterior.eval()
    n = state["x"].shape[0]
    started = time.perf_counter()
    values = log_likelihood(model, posterior, state["x"], k=K, seed=0, points=range(n * rank // world, n * (rank + 1) // world)).value
    torch.save({"values": values, "seconds": time.perf_counter() - started}, state_path.with_name(f"rank{rank}.pt"))


def two_processes(model: VAEModel, posterior: nn.Module, x: Tensor) -> dict:
    """``fp32`` on 2 processes x 1 thread, each on half the points: seconds of the slower."""
    print(f"  fp32_2proc: {x.shape[0]} points ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.pt"
        torch.save({"model": model.state_dict(), "posterior": posterior.state_dict(), "x": x}, state)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(state), str(r), "2"], env=env) for r in range(2)]
        if any(proc.wait() != 0 for proc in procs):
            raise RuntimeError("a fp32_2proc worker failed")
        parts = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(2)]
    seconds = max(part["seconds"] for part in parts)
    rate = x.shape[0] / seconds
    return {
        "points": x.shape[0],
        "seconds": seconds,
        "points_per_s": rate,
        "seconds_for_10000_points": TEST_POINTS / rate,
        "extrapolated": x.shape[0] != TEST_POINTS,
        "mean_log_likelihood": torch.cat([part["values"] for part in parts]).mean().item(),
        "peak_rss_above_start_mib": None,
        "values": torch.cat([part["values"] for part in parts]),
    }


def _status_mib(field: str) -> float | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        pass


def timed(name: str, run, points: int) -> dict:
    """Run ``run()`` (returns per-point values) once; seconds, rate, peak memory, estimate."""
    _reset_peak()
    before = _status_mib("VmRSS")
    print(f"  {name}: {points} points ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    values = run()
    seconds = time.perf_counter() - started
    peak = _status_mib("VmHWM")
    rate = points / seconds
    return {
        "points": points,
        "seconds": seconds,
        "points_per_s": rate,
        "seconds_for_10000_points": TEST_POINTS / rate,
        "extrapolated": points != TEST_POINTS,
        "mean_log_likelihood": values.mean().item(),
        "peak_rss_above_start_mib": None if peak is None or before is None else peak - before,
        "values": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset of the points, extrapolated (under a minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument("--worker", nargs=3, metavar=("STATE", "RANK", "WORLD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), int(args.worker[1]), int(args.worker[2]))
        return
    train_points, points, two_process_points, previous_points = QUICK if args.quick else FULL

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    mnist = load_mnist()
    train = Dataset(torch.from_numpy(mnist["train"][0][:train_points]).float() / 255, dynamic=True)
    test = torch.bernoulli(torch.from_numpy(mnist["test"][0]).float() / 255, generator=torch.Generator().manual_seed(1))
    model, posterior = _build()
    print(f"training one epoch on {train_points} images (not timed) ...", file=sys.stderr, flush=True)
    optimizers = make_optimizers(model, posterior, lr=1e-3)
    state = TrainState(model, posterior, optimizers, torch.Generator().manual_seed(2))
    train_epoch(state, train, ELBO(), batch_size=100)
    posterior.eval()
    x = test[:points]
    for precision in ("fp32", "bf16") if bf16_supported(torch.device("cpu")) else ("fp32",):  # warm-up: first-call costs
        log_likelihood(model, posterior, x[:2], k=2 * 2048, seed=0, precision=precision)
    previous_log_likelihood(model, posterior, x[:2], 1000)

    peak = {"fp32": matmul_gflops(torch.float32)}
    if bf16_supported(torch.device("cpu")):
        peak["bf16"] = matmul_gflops(torch.bfloat16)
    decoder_flop = 2 * K * 10_000 * sum(m.in_features * m.out_features for m in model.decoder.modules() if isinstance(m, nn.Linear))
    load_before = os.getloadavg()
    before = cpu_snapshot()
    started = time.perf_counter()
    results = {"fp32": timed("fp32", lambda: log_likelihood(model, posterior, x, k=K, seed=0).value, points)}
    if bf16_supported(torch.device("cpu")):
        results["bf16"] = timed("bf16", lambda: log_likelihood(model, posterior, x, k=K, seed=0, precision="bf16").value, points)
    else:
        results["bf16"] = None
    for precision in ("fp32", "bf16") if results["bf16"] is not None else ("fp32",):
        first = time.perf_counter()
        log_likelihood(model, posterior, x[:2], k=K, seed=0, precision=precision, compile=True)
        compile_seconds = time.perf_counter() - first
        run = partial(log_likelihood, model, posterior, x, k=K, seed=0, precision=precision, compile=True)
        result = timed(f"{precision}_compiled", lambda: run().value, points)
        result["compile_seconds"] = compile_seconds
        result["seconds_with_compile_for_10000_points"] = result["seconds_for_10000_points"] + compile_seconds
        results[f"{precision}_compiled"] = result
    results["fp32_2proc"] = two_processes(model, posterior, x[:two_process_points])
    results["previous"] = timed("previous", lambda: previous_log_likelihood(model, posterior, test[:previous_points], K), previous_points)
    facts = run_facts(started)
    others = other_processes_cpus(before)

    fp32_values = results["fp32"].pop("values")
    compiled_difference = {
        name: (results[name].pop("values") - fp32_values).abs().max().item()
        for name in ("fp32_compiled", "bf16_compiled")
        if name in results
    }
    bf16_difference = None
    if results["bf16"] is not None:
        diff = results["bf16"].pop("values") - fp32_values
        bf16_difference = {"mean": diff.mean().item(), "mean_abs": diff.abs().mean().item(), "max_abs": diff.abs().max().item()}
    two_process_difference = (results["fp32_2proc"].pop("values") - fp32_values[:two_process_points]).abs().max().item()
    previous_values = results["previous"].pop("values")
    # the previous path draws other samples: its estimate agrees up to Monte Carlo noise only
    previous_vs_fp32 = (previous_values - fp32_values[:previous_points]).mean().item()
    batch, chunk = chunk_sizes(model, K)
    report = {
        "fp32_seconds_for_10000_points": results["fp32"]["seconds_for_10000_points"],
        "bf16_seconds_for_10000_points": None if results["bf16"] is None else results["bf16"]["seconds_for_10000_points"],
        "bf16_compiled_seconds_for_10000_points": results.get("bf16_compiled", {}).get("seconds_for_10000_points"),
        "fp32_compiled_seconds_for_10000_points": results["fp32_compiled"]["seconds_for_10000_points"],
        # per point, against fp32 eager on the same samples: float rounding (fp32), bf16's (bf16)
        "compiled_minus_fp32_max_abs": compiled_difference,
        "previous_seconds_for_10000_points": results["previous"]["seconds_for_10000_points"],
        "fp32_speedup_vs_previous": results["fp32"]["points_per_s"] / results["previous"]["points_per_s"],
        "fp32_2proc_seconds_for_10000_points": results["fp32_2proc"]["seconds_for_10000_points"],
        "two_process_max_abs_difference": two_process_difference,
        # the decoder's products alone, for all 10,000 points, at the day's measured matmul peak
        "fp32_decoder_matmul_floor_seconds": decoder_flop / (peak["fp32"] * 1e9),
        "matmul_peak_gflops": peak,
        "bf16_speedup_vs_fp32": None if results["bf16"] is None else results["bf16"]["points_per_s"] / results["fp32"]["points_per_s"],
        "test_log_likelihood_fp32": results["fp32"]["mean_log_likelihood"],
        "bf16_minus_fp32_per_point": bf16_difference,
        "previous_minus_fp32_mean_on_its_points": previous_vs_fp32,
        "results": results,
        "k": K,
        "chunk": {"points_per_batch": batch, "samples_per_chunk": chunk, "row_bytes": row_bytes(model, torch.float32)},
        "model": "VAE 784-400-20 (Bernoulli), mean-field encoder 784-400-40, one epoch of Adam lr 1e-3 at batch 100",
        "data": "MNIST test (bytes / 255), one Bernoulli binarisation (seed 1)",
        "quick": args.quick,
        **facts,
        "machine": cpu_name(),  # the CPU's model name, not the processor type
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": load_before[0],
        "load_average_1min_after": os.getloadavg()[0],
        "other_processes_cpus": others,
    }
    write_report(args.out, report)

    label = f" (extrapolated from {points} points)" if points != TEST_POINTS else ""
    print(f"IWAE k={K} on the 10,000 MNIST test points, 784-400-20 VAE, {report['threads']} threads{label}:")
    for name, r in results.items():
        if r is None:
            print(f"  {name:8s} skipped (no native bf16)")
            continue
        extra = f" (timed on {r['points']} points)" if r["extrapolated"] else ""
        memory = r["peak_rss_above_start_mib"]
        print(f"  {name:8s} {r['seconds_for_10000_points']:8.1f} s  {r['points_per_s']:7.1f} points/s  "
              f"peak +{memory if memory is not None else float('nan'):.0f} MiB  estimate {r['mean_log_likelihood']:.2f}{extra}")  # fmt: skip
    print(f"  fp32 speed-up vs previous {report['fp32_speedup_vs_previous']:.1f}x", end="")
    if bf16_difference is not None:
        print(f"; bf16 {report['bf16_speedup_vs_fp32']:.2f}x fp32, bf16 - fp32 per point: mean {bf16_difference['mean']:+.4f}, "
              f"max |.| {bf16_difference['max_abs']:.4f} nats", end="")  # fmt: skip
    print(f"\n  other processes used {others if others is not None else float('nan'):.2f} CPUs on average; "
          f"load average {load_before[0]:.2f} -> {report['load_average_1min_after']:.2f}")  # fmt: skip
    peaks = ", ".join(f"{name} {gflops:.0f}" for name, gflops in peak.items())
    print(f"  matmul peak (GFLOP/s): {peaks}; the fp32 decoder products alone need "
          f"{report['fp32_decoder_matmul_floor_seconds']:.0f} s for 10,000 points")


if __name__ == "__main__":
    main()
