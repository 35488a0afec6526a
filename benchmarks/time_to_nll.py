r"""Time to published quality: Burda et al.'s (2016) Table 1, one stochastic layer, with the fast
presets, against the paper's-settings time per pass measured on the same host in the same call.

Trains ``--preset burda-1l-fast`` (VAE, k = 1), ``burda-1l-fast-iwae5`` (IWAE, k = 5) or
``burda-1l-fast-iwae5-bf16`` (``iwae_k5_bf16``: the IWAE recipe in bfloat16 over 2,500 passes,
trained only on a CPU with native bf16, so that all its passes and their paper's-settings
reference passes run on that kind of host; elsewhere the call skips it), and the same bf16 recipe
on two threads of one process (``iwae_k5_bf16_2t``: both cores, timed by the wall clock, below),
and that again with its training step compiled (``iwae_k5_bf16_2tc``, ``--compile``):
the paper's model (784-200-200-50 tanh, one stochastic layer, dynamic binarisation, all 60,000
training images) under a recipe chosen for wall time (src/avi/runs/config.py ``PRESETS``). Between
its chunks of epochs the script times single passes of the paper's settings (batch 20, lr 1e-3,
Adam eps 1e-4, fp32, one thread, ``--compile`` as the reproduction ran) in a scratch run, so
both see the same machine load; ``paper_settings_*_hours_same_host`` is their median times 3,280.
Time is counted in CPU seconds of the one-thread processes, which on a quiet core equal wall
seconds and which other processes on a shared machine do not inflate (under load a wall-clock
epoch here took up to 6x longer); the wall hours are recorded beside them (``measured_wall``).
A run on two threads (:data:`THREADS`) is timed by the wall clock instead, its own and the
reference passes' (CPU seconds would count both threads), which holds only on a machine with
nothing else running: each call records the CPUs that other processes kept busy while it trained
(``other_processes_cpus_by_call``; about 0 on a quiet machine). Each call also records its
training hours and its own reference passes' paper's-settings hours (``calls``), and
``fraction_call_by_call`` sets each call's hours against its own reference, which a host that
changes speed between sessions needs (the headline fraction pools the passes of all calls).
Runs resume from their checkpoints across calls and sessions:

    python benchmarks/time_to_nll.py --only vae_k1 --hours 2     # train for at most 2 h, then evaluate
    python benchmarks/time_to_nll.py --only iwae_k5_bf16 --hours 2
    python benchmarks/time_to_nll.py --only iwae_k5_bf16_2t --hours 2   # nothing else running
    python benchmarks/time_to_nll.py --only iwae_k5_bf16_2tc --hours 2  # likewise
    python benchmarks/time_to_nll.py --quick                     # a smoke run of a few passes

When a run has finished its epochs its test NLL is the k = 5000 bound on all 10,000 test images
(one fixed binarisation, as in the reproduction); before that, an interim figure on
``--eval-points`` images. With all 60,000 images in training there is no held-out split while it
trains: the curve is the training bound per epoch, the recipe is fixed in advance, and the last
epoch is the model reported (nothing is selected on the test set). State:
``benchmarks/state/time_to_nll/``; results: ``benchmarks/results/time_to_nll.{json,png}``.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from avi.atomic import save_figure
from avi.inference import Hook
from avi.precision import bf16_supported
from avi.runs.config import load_config
from avi.runs.rundir import CHECKPOINT, read_metrics
from avi.runs.train import run_fit
from machine import cpu_name, cpu_snapshot, folder_lock, other_processes_cpus, write_report
from reproduce_burda import (
    PASSES,
    PUBLISHED,
    config_for,
    epochs_done,
    evaluate,
    left_the_tree,
    quick_folders,
    run_parser,
    training_bound,
)

PRESET = {"vae_k1": "burda-1l-fast", "iwae_k5": "burda-1l-fast-iwae5", "iwae_k5_bf16": "burda-1l-fast-iwae5-bf16",
          "iwae_k5_bf16_2t": "burda-1l-fast-iwae5-bf16", "iwae_k5_bf16_2tc": "burda-1l-fast-iwae5-bf16"}  # fmt: skip
LABEL = {"vae_k1": "VAE, k = 1", "iwae_k5": "IWAE, k = 5", "iwae_k5_bf16": "IWAE, k = 5, bf16",
         "iwae_k5_bf16_2t": "IWAE, k = 5, bf16, 2 threads",
         "iwae_k5_bf16_2tc": "IWAE, k = 5, bf16, 2 threads, compiled"}  # fmt: skip
#: the run of Table 1 each run reproduces: its published NLL and its paper's-settings passes
TABLE_RUN = {"vae_k1": "vae_k1", "iwae_k5": "iwae_k5", "iwae_k5_bf16": "iwae_k5", "iwae_k5_bf16_2t": "iwae_k5",
             "iwae_k5_bf16_2tc": "iwae_k5"}  # fmt: skip
#: the runs trained on more than one thread (the others on ``--threads``, one by default), timed by
#: the wall clock: on two threads a bf16 pass took 2.08 s against 2.87-2.96 s on one (the quiet
#: Intel AMX host, 2026-12-07), where two processes under torchrun took 3.06-3.34 s
THREADS = {"iwae_k5_bf16_2t": 2, "iwae_k5_bf16_2tc": 2}
#: the runs that train through ``torch.compile`` (``--compile``): on two threads a bf16 pass took
#: 2.31-2.69 s compiled against 3.29-3.69 s eager (five passes each, interleaved, the Intel AMX
#: host, 2026-12-07 15:56 UTC; the first compiled pass pays 7-16 s of compiling)
COMPILED = {"iwae_k5_bf16_2tc"}


def clock(name: str) -> str:
    """What a run's time is counted in: ``wall`` seconds for the runs of :data:`THREADS`, else
    ``cpu`` seconds of its one-thread process."""
    return "wall" if name in THREADS else "cpu"


@dataclass
class CpuSeconds(Hook):
    """Adds ``cpu_seconds`` to each epoch's row: this process's CPU seconds in training so far,
    a resumed run's included. For a one-thread run it is the wall time a quiet core would take,
    whatever else the machine runs meanwhile (its wall time is not)."""

    before: float
    started: float = field(default=0.0, init=False)

    def on_epoch_start(self, state) -> None:
        self.started = time.process_time()

    def on_epoch(self, state, record: dict) -> bool:
        self.before += time.process_time() - self.started
        record["cpu_seconds"] = self.before
        return False


def _fit(run_dir: Path, config, *, epochs: int, compile: bool | None = None) -> None:
    """Train ``run_dir`` (new, or resumed from its checkpoint) to ``epochs``, counting CPU seconds;
    ``compile``: compiled or not from now on (None: as its config says)."""
    rows = read_metrics(run_dir) if (run_dir / "metrics.csv").exists() else []
    hooks = [CpuSeconds(float(rows[-1]["cpu_seconds"]) if rows else 0.0)]
    if (run_dir / CHECKPOINT).exists():
        run_fit(run_dir=run_dir, resume=True, epochs=epochs, compile=compile, hooks=hooks)
    else:
        run_fit(config, run_dir, epochs=epochs, hooks=hooks)


def fast_config(name: str, *, threads: int, quick: bool):
    """The preset's config; ``quick``: 2 epochs (and a 1-epoch KL warm-up where it has one)."""
    values = {"model": {"preset": PRESET[name]}, "train": {"threads": threads, "compile": name in COMPILED}}
    if quick:
        values["train"]["epochs"] = 2
        values |= {"remedies": {"kl_warmup": 1}} if name == "vae_k1" else {}
    return load_config(None, values)


def paper_pass_seconds(scratch: Path, name: str) -> tuple[float, float]:
    """Wall and CPU seconds of one more training pass of the paper's settings in ``scratch`` (its
    run's epoch, without building the run; the first pass of each process pays the compilation
    and is run, not returned)."""
    config = config_for(TABLE_RUN[name], batch_size=20, lr=1e-3, threads=1, precision="fp32", compile=True)
    for _ in range(2 if not (scratch / CHECKPOINT).exists() else 1):
        _fit(scratch, config, epochs=epochs_done(scratch) + 1, compile=True)
    rows = read_metrics(scratch)
    return float(rows[-1]["epoch_seconds"]), float(rows[-1]["cpu_seconds"]) - float(rows[-2]["cpu_seconds"])


def train_interleaved(run_dir: Path, scratch: Path, config, *, deadline: float, timings: list) -> float | None:
    """Train ``run_dir`` in chunks of at most 100 epochs until its epochs are done or the deadline
    passes, timing a paper's-settings pass before each chunk (into ``timings``; about 10 s for
    the VAE on one AMD thread against about 5 minutes of chunk). Returns the CPUs other
    processes kept busy while the chunks trained, on average (None without a chunk)."""
    busy, seconds = 0.0, 0.0
    while time.monotonic() < deadline and epochs_done(run_dir) < config.train.epochs:
        torch.set_num_threads(1)
        timings.append(paper_pass_seconds(scratch, run_dir.name))
        torch.set_num_threads(config.train.threads)
        done = epochs_done(run_dir)
        left = max(deadline - time.monotonic(), 0.0)
        per_epoch = _seconds_per_epoch(run_dir) or 5.0
        started = cpu_snapshot()
        _fit(run_dir, config, epochs=min(done + max(1, min(100, int(left / per_epoch))), config.train.epochs))
        other, chunk = other_processes_cpus(started), time.perf_counter() - started.wall
        busy, seconds = busy + (other or 0.0) * chunk, seconds + chunk
    return busy / seconds if seconds else None


def trained_hours(run_dir: Path, name: str) -> float:
    """Hours ``run_dir`` has trained so far in its clock (:func:`clock`): 0 before its first epoch."""
    rows = read_metrics(run_dir) if (run_dir / "metrics.csv").exists() else []
    return float(rows[-1][f"{clock(name)}_seconds"]) / 3600 if rows else 0.0


def call_by_call(calls: list[dict]) -> float | None:
    """sum_i hours_i / paper_hours_i: each call's training hours against the paper's-settings
    hours of its own interleaved passes, so that a host that changes speed between calls
    (sessions) weighs each call by its own reference (None where a call timed no pass)."""
    if any(c["paper_hours"] is None for c in calls if c["hours"]):
        return None
    return sum(c["hours"] / c["paper_hours"] for c in calls if c["hours"])


def _seconds_per_epoch(run_dir: Path) -> float | None:
    rows = read_metrics(run_dir) if (run_dir / "metrics.csv").exists() else []
    return statistics.median(float(r["epoch_seconds"]) for r in rows[-20:]) if rows else None


def plot(state: Path, runs: dict, paper_hours: dict, out: Path) -> None:
    """``out`` (PNG): each run's training bound (negated, nats) against its training hours (CPU
    hours of one thread, or wall hours of a two-thread run), its test NLL as a point, the
    published NLLs dashed and a fifth of the paper's-settings time (in the run's clock) dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, label), color in zip(LABEL.items(), ("C0", "C1", "C2", "C3", "C4"), strict=True):
        curve = curve_of(state / name) if (state / name / "metrics.csv").exists() else runs.get(name, {}).get("curve")
        if curve:
            ax.plot(curve.get("hours", curve["cpu_hours"]), curve["bound"], color=color, lw=1,
                    label=f"{label}: training bound ({PRESET[name]})")  # fmt: skip
        if name in runs:
            r = runs[name]
            ax.plot([r[f"{clock(name)}_hours"]], [r["test_nll"]], "o", color=color,
                    label=f"{label}: test NLL {r['test_nll']:.2f} ({r['test_points']:,} points, k = {r['k']})")  # fmt: skip
        published = PUBLISHED[TABLE_RUN[name]]["nll"]
        ax.axhline(published, color=color, ls="--", lw=0.8, label=f"{label}: Burda et al. {published}")
        if paper_hours.get(name):
            ax.axvline(paper_hours[name] / 5, color=color, ls=":", lw=0.8,
                       label=f"{label}: a fifth of the paper's settings ({paper_hours[name]:.1f} h)")  # fmt: skip
    ax.set_ylim(84, 100)
    ax.set_xlabel("training hours: CPU hours of one thread (a quiet core's wall time); wall hours on 2 threads")
    ax.set_ylabel("nats (lower is better)")
    ax.set_title("Time to Burda et al.'s Table 1 (one stochastic layer)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    plt.close(fig)


def curve_of(run_dir: Path) -> dict[str, list[float]]:
    """A run's training curve: CPU hours (and, for a run of :data:`THREADS`, the wall ``hours``
    it is timed by) and the bound in nats per epoch, the bound trained (IWAE's, or the ELBO)
    where the KL weight is 1 and the ELBO while a KL warm-up lowers it."""
    rows = read_metrics(run_dir)
    wall = {"hours": [round(float(r["wall_seconds"]) / 3600, 5) for r in rows]} if run_dir.name in THREADS else {}
    return {
        "cpu_hours": [round(float(r["cpu_seconds"]) / 3600, 5) for r in rows],
        **wall,
        "bound": [round(-training_bound(r), 4) for r in rows],
    }


def main() -> None:
    parser = run_parser(__doc__, "time_to_nll", PRESET, quick="a few passes, small evaluation")
    parser.add_argument("--k", type=int, default=5000, help="importance samples of the test NLL")
    parser.add_argument("--eval-points", type=int, default=1000, help="test points of an unfinished run's NLL")
    args = parser.parse_args()
    if quick_folders(args):
        args.k, args.eval_points = 50, 500
    names = [args.only] if args.only else sorted(PRESET)
    budget = args.hours * 3600 / len(names)
    results, timings = {}, {}
    for name in names:
        config = fast_config(name, threads=THREADS.get(name, args.threads), quick=args.quick)
        run_dir, timings[name] = args.state / name, []
        if left_the_tree(args.out, name, run_dir):
            continue
        if config.train.precision == "bf16" and not bf16_supported(torch.device("cpu")) and not args.quick:
            print(f"{name}: skipped: its recipe is bf16 and this CPU ({cpu_name()}) has no native bf16")
            continue
        before = trained_hours(run_dir, name)
        other = train_interleaved(run_dir, args.state / f"paper_{name}", config,
                                  deadline=time.monotonic() + budget, timings=timings[name])  # fmt: skip
        passes = [t[0 if clock(name) == "wall" else 1] for t in timings[name]]
        call = {"hours": trained_hours(run_dir, name) - before, "other_processes_cpus": other,
                "paper_hours": statistics.median(passes) * PASSES / 3600 if passes else None}  # fmt: skip
        finished = epochs_done(run_dir) >= config.train.epochs
        r = evaluate(run_dir, k=args.k, points=None if finished else args.eval_points)
        cpu, published = float(read_metrics(run_dir)[-1]["cpu_seconds"]), PUBLISHED[TABLE_RUN[name]]["nll"]
        results[name] = r | {"finished": finished, "epochs_total": config.train.epochs, "preset": PRESET[name],
                             "wall_hours": r["train_wall_seconds"] / 3600, "cpu_hours": cpu / 3600,
                             "published_nll": published, "curve": curve_of(run_dir),
                             "threads": config.train.threads, "clock": clock(name),
                             "other_processes_cpus_by_call": [other], "calls": [call]}  # fmt: skip
    with folder_lock(args.out.parent):
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        for name, r in results.items():  # this call's load after the earlier calls'
            earlier = previous.get("runs", {}).get(name, {})
            for key in ("other_processes_cpus_by_call", "calls"):
                r[key] = earlier.get(key, []) + r[key]
            if "calls" in earlier or not previous.get("runs", {}).get(name):  # every call recorded
                r["fraction_call_by_call"] = call_by_call(r["calls"])
        write_report(args.out, report_of(previous, results, timings, args))
        runs, paper = previous.get("runs", {}) | results, _paper_hours(previous, timings)
        plot(args.state, runs, {n: paper[clock(n)].get(n) for n in PRESET}, args.out.with_suffix(".png"))
    for name, r in results.items():
        hours = paper[clock(name)][name]
        share = f", {r[f'{clock(name)}_hours'] / hours:.3f} of the paper's {hours:.2f} h" if hours else ""
        if r.get("fraction_call_by_call") is not None:
            share += f" ({r['fraction_call_by_call']:.3f} call by call)"
        print(f"{name}: {epochs_done(args.state / name)}/{r['epochs_total']} epochs, {r['cpu_hours']:.2f} CPU h "
              f"({r['wall_hours']:.2f} wall h){share}; test NLL {r['test_nll']:.2f} on {r['test_points']:,} points "
              f"(published {r['published_nll']})")


def _paper_hours(previous: dict, timings: dict) -> dict:
    """The paper's-settings passes so far (``seconds``: wall and CPU lists per run) and their
    median times 3,280 passes in hours (``wall`` and ``cpu``: per run, None before any)."""
    before = previous.get("paper_pass_seconds", {})
    seconds = {
        kind: {n: before.get(kind, {}).get(n, []) + [t[i] for t in timings.get(n, [])] for n in PRESET}
        for i, kind in enumerate(("wall", "cpu"))
    }
    hours = {kind: {n: statistics.median(t) * PASSES / 3600 if t else None for n, t in per.items()}
             for kind, per in seconds.items()}  # fmt: skip
    return {"seconds": seconds, **hours}


def report_of(previous: dict, results: dict, timings: dict, args) -> dict:
    """The JSON report: this call's runs merged into the previous report's. The headline hours
    and fractions are CPU hours of the one-thread processes (the quiet-machine wall time), and
    wall hours for the runs of :data:`THREADS`; the wall hours of this shared machine are kept
    beside them."""
    runs, paper = previous.get("runs", {}) | results, _paper_hours(previous, timings)
    return {
        "benchmark": "time_to_nll",
        "quick": args.quick,
        **{f"{n}_test_nll": runs.get(n, {}).get("test_nll") for n in PRESET},
        **{f"{n}_wall_hours": runs.get(n, {}).get(f"{clock(n)}_hours") for n in PRESET},
        "paper_settings_vae_hours_same_host": paper["cpu"]["vae_k1"],
        "paper_settings_iwae_hours_same_host": paper["cpu"]["iwae_k5"],
        "paper_settings_iwae_bf16_hours_same_host": paper["cpu"]["iwae_k5_bf16"],
        "paper_settings_iwae_bf16_2t_wall_hours_same_host": paper["wall"]["iwae_k5_bf16_2t"],
        "paper_settings_iwae_bf16_2tc_wall_hours_same_host": paper["wall"]["iwae_k5_bf16_2tc"],
        "fraction_of_paper_time": {n: runs[n][f"{clock(n)}_hours"] / paper[clock(n)][n]
                                   for n in runs if paper[clock(n)].get(n)},  # fmt: skip
        "fraction_call_by_call": {n: r["fraction_call_by_call"] for n, r in runs.items()
                                  if r.get("fraction_call_by_call") is not None},  # fmt: skip
        "measured_wall": {"runs_hours": {n: r["wall_hours"] for n, r in runs.items()}, "paper_settings_hours": paper["wall"]},
        "paper_pass_seconds": paper["seconds"],
        "runs": runs,
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }


if __name__ == "__main__":
    main()
