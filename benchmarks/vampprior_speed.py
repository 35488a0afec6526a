"""Seconds of the VampPrior run's three costs, before and after the fast mixture density.

The model is ``reproduce_vampprior.py``'s ``vamp`` run (784-300-300-40 ReLU VAE, Bernoulli,
mean-field encoder 784-300-300-80, 500 pseudo-inputs, Adam 5e-4, batches of 100, the KL
warm-up's weight of epoch 50), built from its config on static MNIST and trained for
:data:`TRAIN_STEPS` steps first, outside the timing (an untrained encoder maps every
pseudo-input to about the same Gaussian, so few of the mixture's terms underflow, and underflow
is what made the old densities slow). Then, on one thread, in rounds of old, new:

- ``step``: seconds per training step (:func:`avi.inference.train_step`; the encoder's pass
  over the 500 pseudo-inputs is in both);
- ``diagnostics``: seconds per call of :func:`avi.runs.collapse.diagnostics_row` on the first
  1,000 validation images (per-dimension KL against the mixture's marginals from 100 draws,
  active units, mutual information), each variant from the same seed;
- ``evaluation``: seconds of :func:`avi.evaluation.log_likelihood` at k = 5,000 on
  4 test images with its default chunks (1,024 samples), scaled to 1,000
  points (``evaluation_per_1000_points``).

``old`` is the code this replaced, patched in for its turn: the direct form
logsumexp_c [log w_c + log N(z; mu_c, diag(s_c^2))] formed (rows, C, K) at a time with
torch.distributions (2^22 numbers a block), the same for the per-dimension marginals, and
``model.prior()`` (an encoder pass over the pseudo-inputs) formed for every chunk of samples.
Reported per cost: each round's seconds, the median and the ratio of medians, and how far the
two variants' numbers differ (diagnostics: the largest difference of a dimension's KL and of
the mutual information; evaluation: of a point's estimate), which float rounding alone explains.

Usage: ``python benchmarks/vampprior_speed.py [--quick] [--out PATH]`` (``--quick``: one round,
a few steps, 200 diagnostic points, one evaluated point at k = 1,000; about two minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal

from avi.evaluation import bounds, log_likelihood
from avi.inference import TrainState, make_optimizers, train_step
from avi.models import priors
from avi.runs.build import build_objective
from avi.runs.collapse import diagnostics_row
from avi.runs.load import build_run
from avi.seeding import seeded
from machine import cpu_name, cpu_snapshot, other_processes_cpus, run_facts, write_report
from reproduce_vampprior import config_for

DEFAULT_OUT = Path(__file__).parent / "results" / "vampprior_speed.json"
TRAIN_STEPS, OLD_BLOCK = 500, 2**22
# (rounds, timed steps, diagnostic points, evaluated points, k)
FULL = (3, 20, 1000, 4, 5000)
QUICK = (1, 5, 200, 1, 1000)


def _direct_log_prob(self: priors.MixtureOfGaussians, value: Tensor) -> Tensor:
    """The replaced MixtureOfGaussians.log_prob: the components' log densities (rows, C, K)."""
    return priors._by_rows(
        value,
        self.loc.numel(),
        lambda rows: torch.logsumexp(self.components.log_prob(rows[:, None]) + self.log_weights, dim=-1),
    )


def _direct_marginal_log_prob(self: Any, value: Tensor) -> Tensor:
    """The replaced per-dimension marginals' log_prob."""
    normal = Normal(self.loc, self.scale, validate_args=False)
    return priors._by_rows(
        value,
        self.loc.numel(),
        lambda rows: torch.logsumexp(normal.log_prob(rows[:, None]) + self.log_weights[:, None], dim=1),
    )


def _per_chunk_prior(*args: Any, prior: Any = None, **kwargs: Any) -> Tensor:
    """chunk_log_weights as bounds called it before: forming model.prior() for every chunk."""
    return OLD_CHUNK(*args, **kwargs)


OLD_CHUNK = bounds.chunk_log_weights


@contextlib.contextmanager
def old_code(monkeypatch: bool) -> Iterator[None]:
    """The replaced code in place of the new for the block (nothing where ``monkeypatch`` is false)."""
    if not monkeypatch:
        yield
        return
    saved = (priors.MixtureOfGaussians.log_prob, priors._Marginals.log_prob, priors.BLOCK, bounds.chunk_log_weights)
    priors.MixtureOfGaussians.log_prob = _direct_log_prob
    priors._Marginals.log_prob = _direct_marginal_log_prob
    priors.BLOCK, bounds.chunk_log_weights = OLD_BLOCK, _per_chunk_prior
    try:
        yield
    finally:
        (priors.MixtureOfGaussians.log_prob, priors._Marginals.log_prob, priors.BLOCK, bounds.chunk_log_weights) = saved


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def build(points: int) -> tuple[TrainState, Any, Tensor, Tensor, Tensor]:
    """The vamp run's training state after :data:`TRAIN_STEPS` steps on its first
    ``TRAIN_STEPS * 100`` (statically binarised) training images, its objective, a batch of 100
    of them, the first ``points`` validation images and the test images."""
    config = config_for("vamp", threads=1, subset=TRAIN_STEPS * 100)
    with seeded(0):
        run = build_run(config)
    state = TrainState(run.model, run.posterior, make_optimizers(run.model, run.posterior, lr=5e-4), torch.Generator())
    objective = build_objective(config, run.posterior, epoch=50)
    x = run.splits.train.x
    for s in range(TRAIN_STEPS):
        index = torch.arange(s * 100, (s + 1) * 100)
        train_step(state, x[index], index, objective, batch=100)
    return state, objective, x[:100], run.splits.validation.x[:points], run.splits.test.x


def measure(rounds: int, steps: int, points: int, eval_points: int, k: int) -> dict[str, Any]:
    """Interleaved rounds of old and new: seconds per step, per diagnostics call, per evaluation."""
    state, objective, x_train, x_diag, x_test = build(points)
    index = torch.arange(100)
    model, posterior = state.model, state.posterior

    def steps_seconds() -> float:
        """Seconds per training step, the model, posterior and optimisers restored after, so
        that both variants' diagnostics and evaluations see the same parameters."""
        saved = copy.deepcopy([m.state_dict() for m in (model, posterior, *state.optimizers)])
        with seeded(2):
            train_step(state, x_train, index, objective, batch=100)  # warm-up, not timed
            start = time.perf_counter()
            for _ in range(steps):
                train_step(state, x_train, index, objective, batch=100)
            seconds = (time.perf_counter() - start) / steps
        for m, weights in zip((model, posterior, *state.optimizers), saved, strict=True):
            m.load_state_dict(weights)
        return seconds

    seconds: dict[str, dict[str, list[float]]] = {
        v: {"step": [], "diagnostics": [], "evaluation": []} for v in ("old", "new")
    }
    outputs: dict[str, dict[str, Any]] = {"old": {}, "new": {}}
    for r in range(rounds):
        for variant in ("old", "new"):
            with old_code(variant == "old"):
                seconds[variant]["step"].append(steps_seconds())
                t, outputs[variant]["diagnostics"] = _timed(lambda: diagnostics_row(model, posterior, x_diag))
                seconds[variant]["diagnostics"].append(t)
                t, outputs[variant]["evaluation"] = _timed(
                    lambda: log_likelihood(model, posterior, x_test[:eval_points], k=k, seed=0, threads=1)
                )
                seconds[variant]["evaluation"].append(t * (1000 / eval_points) * (5000 / k))
            print(
                f"round {r + 1}/{rounds} {variant}: "
                + ", ".join(f"{n} {v[-1]:.3f} s" for n, v in seconds[variant].items()),
                file=sys.stderr,
            )
    return {"seconds": seconds, "agreement": _agreement(outputs["old"], outputs["new"])}


def _agreement(old: dict[str, Any], new: dict[str, Any]) -> dict[str, float]:
    """The largest differences between the old and new code's numbers in the last round."""
    kl = [key for key in old["diagnostics"] if key.startswith("kl_dim_")]
    return {
        "kl_per_dim_max_abs_difference": max(abs(old["diagnostics"][key] - new["diagnostics"][key]) for key in kl),
        "mutual_information_abs_difference": abs(
            old["diagnostics"]["mutual_information"] - new["diagnostics"]["mutual_information"]
        ),
        "active_units_equal": old["diagnostics"]["active_units"] == new["diagnostics"]["active_units"],
        "estimate_max_abs_difference": (old["evaluation"].value - new["evaluation"].value).abs().max().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (about two minutes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args()
    rounds, steps, points, eval_points, k = QUICK if args.quick else FULL
    torch.set_num_threads(1)
    load_before, before, started = os.getloadavg(), cpu_snapshot(), time.perf_counter()
    result = measure(rounds, steps, points, eval_points, k)
    facts, others = run_facts(started), other_processes_cpus(before)
    medians = {v: {n: statistics.median(s) for n, s in costs.items()} for v, costs in result["seconds"].items()}
    report = {
        "benchmark": "vampprior_speed",
        "quick": args.quick,
        "seconds_per_step": {v: medians[v]["step"] for v in medians},
        "seconds_per_diagnostics_call": {v: medians[v]["diagnostics"] for v in medians},
        "evaluation_per_1000_points_k5000": {v: medians[v]["evaluation"] for v in medians},
        "speedup": {n: medians["old"][n] / medians["new"][n] for n in medians["new"]},
        "per_round_seconds": result["seconds"],
        "agreement": result["agreement"],
        "sizes": {
            "rounds": rounds,
            "timed_steps": steps,
            "diagnostic_points": points,
            "evaluated_points": eval_points,
            "k": k,
            "train_steps_before": TRAIN_STEPS,
        },  # fmt: skip
        **facts,
        "machine": cpu_name(),
        "load_average_1min_before": load_before[0],
        "load_average_1min_after": os.getloadavg()[0],
        "other_processes_cpus": others,
    }
    write_report(args.out, report)
    for name, key in (("step", "seconds_per_step"), ("diagnostics", "seconds_per_diagnostics_call"),
                      ("evaluation", "evaluation_per_1000_points_k5000")):  # fmt: skip
        old, new = report[key]["old"], report[key]["new"]
        print(f"{name:12s} old {old:9.3f} s  new {new:9.3f} s  x{report['speedup'][name]:.1f}")
    print(f"agreement: {report['agreement']}")


if __name__ == "__main__":
    main()
