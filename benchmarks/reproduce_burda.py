r"""Reproduce Burda, Grosse and Salakhutdinov (2016), Table 1, one stochastic layer, on this machine.

Trains the 784-200-200-50 tanh model as a VAE (k=1) and as an IWAE (k=5) with dynamic
binarisation, Adam (eps 1e-4) and their schedule (stage i = 0..7 lasts 3^i passes at
lr * 10^(-i/7); 3,280 passes), then reports the test NLL from the k=5000 IWAE bound and the
active units. Runs resume from their checkpoints, so the reproduction continues across calls
(and sessions) until every pass is done. The defaults are the paper's settings (batch 20, fp32);
on two cores, train the two runs as two one-thread processes (``--only``; at batch 20 a step is
mostly per-step overhead, so a second thread helps one process little):

    python benchmarks/reproduce_burda.py --only vae_k1 --compile --hours 2    # at most 2 h, then evaluate
    python benchmarks/reproduce_burda.py --only iwae_k5 --compile --hours 2 --eval-points 1000
    python benchmarks/reproduce_burda.py --quick         # a smoke run of a few passes

Each process merges its run's entry into the JSON and the figure (under a lock on the results
folder; both written atomically). A run's test NLL uses all 10,000 test images once it has
finished every pass, or the first ``--eval-points`` before that (an interim figure, labelled
with the number of points). State: ``benchmarks/state/reproduce_burda/``; results:
``benchmarks/results/reproduce_burda.{json,png}``.

``--fast`` runs a variant chosen for speed on two CPU cores, in its own folders
(``reproduce_burda_fast``): batch 100 instead of 20 (lr unchanged), and the networks' products in
bfloat16 for the IWAE (the bound in float32), where on a CPU with AMX it trains about 2x faster
per example at batch 100 and k=5 (2.1x over the 4-pass runs of ``burda_settings.json``), while
for the VAE (k=1, batch 100) fp32 is faster. It is not free: over the whole schedule batch 100
cost the VAE 0.83 nats (docs/results.md), so the paper's settings are the reproduction;
``benchmarks/burda_settings.py`` measures the cost on short schedules.

``--compile`` trains through ``torch.compile`` (``train.compile``: the eager bound and gradients
for the same noise, Inductor drawing its own), which makes the steps at batch 20 faster
(``benchmarks/compile.py``); it holds for the call, so a run can be resumed with or without it.

``--layers 2`` trains the two-stochastic-layer model (784-200-200-100-100-100-50, tanh; preset
``burda-2l``) as ``vae2_k1`` and ``iwae2_k5`` under the fast recipe of ``benchmarks/time_to_nll.py``
(presets ``burda-2l-fast`` and ``burda-2l-fast-iwae5``: batch 250, lr 3e-3 (the IWAE 1e-3: at 3e-3
its bound worsened from pass 50) decayed by a cosine over 1,500 passes, the VAE with a 100-pass KL
warm-up), not the paper's schedule, which at batch 20
would take weeks on this machine. State: ``benchmarks/state/reproduce_burda2/``; the same JSON
gains ``vae2_k1_test_nll``, ``iwae2_k5_test_nll`` and their runs under ``two_layers`` (the
one-layer keys kept); figure ``reproduce_burda_2l.png``:

    python benchmarks/reproduce_burda.py --layers 2 --only vae2_k1 --hours 2 --eval-points 1000
    python benchmarks/reproduce_burda.py --layers 2 --only iwae2_k5 --hours 2 --eval-points 1000

Published (Table 1, dynamic binarisation): VAE k=1 86.76 nats (19 active units);
IWAE k=5 85.54 (22 active units); two stochastic layers, VAE k=1 85.33, IWAE k=5 83.89.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import torch

from avi.atomic import save_figure
from avi.evaluation import log_likelihood, mean_elbo, posterior_mean_variance
from avi.evaluation.collapse import active_units_by_layer
from avi.runs.config import Config, load_config
from avi.runs.rundir import CHECKPOINT, CONFIG, read_config, read_json, read_metrics
from avi.runs.train import load_trained, run_fit
from machine import folder_lock, machine_facts, write_report

PUBLISHED = {"vae_k1": {"nll": 86.76, "active_units": 19}, "iwae_k5": {"nll": 85.54, "active_units": 22}}
PASSES = 3280
#: Burda et al.'s batch size and initial learning rate (the script's defaults)
PAPER_BATCH_SIZE, PAPER_LR = 20, 1e-3
#: ``--fast``: batch 100, and each run's faster precision there (see the module docstring)
FAST_BATCH_SIZE = 100
FAST_PRECISION = {"vae_k1": "fp32", "iwae_k5": "bf16"}
#: ``--layers 2``: the two-stochastic-layer runs, each under its fast preset, and Table 1's NLLs
PRESETS_2L = {"vae2_k1": "burda-2l-fast", "iwae2_k5": "burda-2l-fast-iwae5"}
PUBLISHED_2L = {"vae2_k1": {"nll": 85.33}, "iwae2_k5": {"nll": 83.89}}
LABELS = {"vae_k1": "VAE, k = 1", "iwae_k5": "IWAE, k = 5", "vae2_k1": "VAE, k = 1", "iwae2_k5": "IWAE, k = 5"}


#: the per-epoch collapse diagnostics every this many epochs (and at each call's last): they
#: cost up to half of a pass and no training number depends on them
DIAGNOSTICS_EVERY = 10


def config_for(name: str, *, batch_size: int, lr: float, threads: int, precision: str, compile: bool = False):
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
                "precision": precision,
                "compile": compile,
            },
        },
    )


def variant_of(configs: dict[str, Config]) -> str:
    """The runs' variant from their stored configs (a resumed run keeps its own, whatever this
    call's options): "paper's settings" when every run has Burda et al.'s batch size, learning
    rate and fp32; "fast" when every run has ``--fast``'s; else "custom"."""

    def has(config: Config, batch_size: int, precision: str) -> bool:
        t = config.train
        return (t.batch_size, t.lr, t.precision) == (batch_size, PAPER_LR, precision)

    if all(has(c, PAPER_BATCH_SIZE, "fp32") for c in configs.values()):
        return "paper's settings"
    if all(has(c, FAST_BATCH_SIZE, FAST_PRECISION[name]) for name, c in configs.items()):
        return "fast"
    return "custom"


def epochs_done(run_dir: Path) -> int:
    summary = run_dir / "summary.json"
    return read_json(summary)["epochs_done"] if summary.exists() else 0


def train(run_dir: Path, config, *, deadline: float, max_epochs: int) -> None:
    """Train until ``max_epochs`` are done or the deadline passes, in calls of ``run_fit`` (each
    rebuilds the run from its checkpoint, about 2 s): the first of one epoch, each next sized
    from the measured time per epoch to end at the deadline (at most 100 epochs)."""
    chunk = 1
    torch.set_num_threads(config.train.threads)  # --threads holds for a resumed run too
    while time.monotonic() < deadline:
        done = epochs_done(run_dir)
        if done >= max_epochs:
            return
        target = min(done + chunk, max_epochs)
        started = time.monotonic()
        if (run_dir / CHECKPOINT).exists():
            run_fit(run_dir=run_dir, resume=True, epochs=target, compile=config.train.compile,
                    diagnostics_every=config.train.diagnostics_every)  # fmt: skip
        else:
            run_fit(config, run_dir, epochs=target)
        per_epoch = (time.monotonic() - started) / (target - done)
        chunk = max(1, min(100, int((deadline - time.monotonic()) / per_epoch)))


def evaluate(run_dir: Path, *, k: int, points: int | None) -> dict:
    """Test NLL (IWAE bound, k samples) on the first ``points`` test images (all when None),
    test ELBO and active units of a run's last checkpoint (for a model with several stochastic
    layers, also per layer, z_1 first: Burda et al.'s "16+5"), and whether its training
    objective got worse (summary.json's ``train_objective_worsened``: a rate too high)."""
    run = load_trained(run_dir)
    test_x = run.splits.test.x[:points]
    nll = log_likelihood(run.model, run.posterior, test_x, k=k)
    summary = read_json(run_dir / "summary.json")
    variance = posterior_mean_variance(run.posterior, test_x)
    by_layer = active_units_by_layer(variance, tuple(run.config.model.layers or (variance.numel(),)))
    return {
        "passes_done": summary["epochs_done"],
        "train_wall_seconds": last_wall_seconds(run_dir),
        "batch_size": run.config.train.batch_size,
        "precision": run.config.train.precision,
        "test_points": len(test_x),
        "test_nll": -nll.value.mean().item(),
        "test_nll_stderr": nll.value.std().item() / len(test_x) ** 0.5,  # over points; MC error is far smaller
        "test_elbo": mean_elbo(run.model, run.posterior, test_x),
        "active_units": sum(by_layer),
        "k": k,
        "train_objective_worsened": summary.get("train_objective_worsened"),
    } | ({"active_units_by_layer": list(by_layer)} if len(by_layer) > 1 else {})


def pass_seconds(run_dir: Path, *, images: int, epochs: int) -> dict[str, float]:
    """Wall seconds of a pass over ``images`` training images (``seconds_per_pass``; from the
    median training speed, so a run on a subset says what a full pass costs) plus the validation
    and collapse diagnostics between two epochs' training (``overhead_seconds_per_pass``): the
    median gap before an epoch without diagnostics, and the extra of one with them (medians
    leave out each call's setup) in the share of epochs the run's ``train.diagnostics_every``
    gives them (every epoch's where its rows hold nothing else); and the hours of ``epochs``
    such passes."""
    rows = read_metrics(run_dir)
    speed = statistics.median(float(r["examples_per_second"]) for r in rows)
    wall, train_seconds = ([float(r[key]) for r in rows] for key in ("wall_seconds", "epoch_seconds"))
    gaps: dict[bool, list[float]] = {True: [], False: []}
    for a, b, t, row in zip(wall, wall[1:], train_seconds[1:], rows[1:], strict=False):
        gaps[row.get("active_units") not in (None, "")].append(b - a - t)
    plain, diagnosed = (statistics.median(gaps[kind] or gaps[not kind] or [0.0]) for kind in (False, True))
    every = read_config(run_dir).train.diagnostics_every
    overhead = max(0.0, plain + (diagnosed - plain) / every if every else plain)
    per_pass = images / speed + overhead
    return {"seconds_per_pass": per_pass, "overhead_seconds_per_pass": overhead,
            "estimated_hours": per_pass * epochs / 3600}  # fmt: skip


def left_the_tree(out: Path, name: str, run_dir: Path) -> bool:
    """Whether run ``name`` finished in an earlier call (the report ``out`` says so, under
    ``runs`` or at its top level) and its state has since left the tree: a call then keeps its
    result rather than train it again from scratch, and says so."""
    report = json.loads(out.read_text()) if out.exists() else {}
    entry = (report.get("runs") or report).get(name) or {}
    if not (isinstance(entry, dict) and entry.get("finished") and not run_dir.exists()):
        return False
    print(f"{name}: finished earlier ({out}); its state has left the tree")
    return True


def run_parser(doc: str, name: str, runs: Iterable[str], *, quick: str) -> argparse.ArgumentParser:
    """The options of a resumable reproduction ``name`` with runs ``runs``: ``--quick`` (a smoke
    run: ``quick`` says what it does), ``--only`` one run, ``--hours`` of training for the call,
    ``--threads``, and ``--out`` (benchmarks/results/NAME.json) and ``--state``
    (benchmarks/state/NAME/); :func:`quick_folders` gives a quick run its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{quick} (smoke test)")
    parser.add_argument("--only", choices=sorted(runs), help="train and evaluate this run only")
    parser.add_argument("--hours", type=float, default=1.0, help="training time budget of this call, all runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--out", type=Path, default=Path(f"benchmarks/results/{name}.json"))
    parser.add_argument("--state", type=Path, default=Path(f"benchmarks/state/{name}"))
    return parser


def quick_folders(args: argparse.Namespace) -> bool:
    """Whether the call is ``--quick``; if so, its state and report go to NAME-quick, beside the
    real run's, which it never touches."""
    if args.quick:
        args.state = args.state.with_name(args.state.name + "-quick")
        args.out = args.out.with_name(args.out.stem + "-quick.json")
    return args.quick


def last_wall_seconds(run_dir: Path) -> float | None:
    """Training wall time so far (metrics.csv, last epoch): a running run's summary has none."""
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["wall_seconds"]) if rows else None


def training_bound(row: dict[str, str]) -> float:
    """An epoch's training bound from its metrics.csv row: the objective trained (the ELBO, or
    the IWAE bound), or the ELBO while a KL warm-up weights the objective's KL below 1."""
    weighted = float(row.get("kl_weight") or 1.0) != 1.0
    return float(row["train_elbo"] if weighted else row["train_objective"])


def bound_curve(metrics: Path) -> dict[str, list]:
    """A run's training bound per pass (:func:`training_bound`, negated, in nats) from its
    metrics.csv: kept in the report, so the figure keeps a finished run's curve once its state
    has left the tree."""
    with metrics.open() as f:
        rows = list(csv.DictReader(f))
    return {"passes": [int(r["epoch"]) for r in rows], "bound": [round(-training_bound(r), 4) for r in rows]}


def plot_progress(state: Path, runs: dict, out: Path, *, layers: int = 1) -> None:
    """``out`` (PNG): each run's training bound per pass (:func:`training_bound`: the ELBO for the
    VAE, the k = 5 IWAE bound for the IWAE; negated, in nats; from its state, else from its
    report entry's ``curve``) on a log axis (with the one-layer schedule's stage ends), its latest
    test NLL as a point, and the published NLLs as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    published = PUBLISHED if layers == 1 else PUBLISHED_2L
    for end in [sum(3**j for j in range(i + 1)) for i in range(8)] if layers == 1 else []:
        ax.axvline(end, color="0.9", lw=0.8, zorder=0)
    for name, color in zip(published, ("C0", "C1"), strict=True):
        label = LABELS[name]
        metrics = state / name / "metrics.csv"
        curve = bound_curve(metrics) if metrics.exists() else runs.get(name, {}).get("curve")
        if curve is None and name not in runs:
            continue
        if curve is not None:
            ax.plot(curve["passes"], curve["bound"], color=color, lw=1, label=f"{label}: training bound")
        if name in runs:
            r = runs[name]
            ax.plot([r["passes_done"]], [r["test_nll"]], "o", color=color,
                    label=f"{label}: test NLL {r['test_nll']:.2f} ({r['test_points']:,} points)")  # fmt: skip
        ax.axhline(published[name]["nll"], color=color, ls="--", lw=0.8,
                   label=f"{label}: Burda et al. {published[name]['nll']}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(1, PASSES * 1.2)  # room for the final test NLL's point
    ax.set_ylim(82, 110)
    ax.set_xlabel("pass over the 60,000 training images (stage ends in grey)")
    ax.set_ylabel("nats (lower is better)")
    ax.set_title(f"Reproducing Burda et al. (2016), Table 1, {('one', 'two')[layers - 1]} stochastic layer(s)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few passes, small evaluation (smoke test)")
    parser.add_argument(
        "--layers",
        type=int,
        choices=[1, 2],
        default=1,
        help="stochastic layers: 1, the paper's settings; 2, a fast recipe (vae2_k1, iwae2_k5)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="batch 100, the IWAE in bf16, in the reproduce_burda_fast folders (not the paper's)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results JSON (default benchmarks/results/reproduce_burda[_fast].json)",
    )
    parser.add_argument("--state", type=Path, help="runs' folder (default benchmarks/state/reproduce_burda[_fast|2])")
    parser.add_argument("--hours", type=float, default=1.0, help="training time budget of this call, both runs")
    parser.add_argument("--batch-size", type=int, help="default 20 as Burda et al. (100 with --fast)")
    parser.add_argument("--lr", type=float, help="initial learning rate of the schedule (default 1e-3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--k", type=int, default=5000, help="importance samples of the test NLL")
    parser.add_argument("--eval-points", type=int, default=10_000, help="test points of an unfinished run's NLL")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="both runs' precision (default fp32; with --fast, bf16 for the IWAE)",
    )
    parser.add_argument("--compile", action="store_true", help="train through torch.compile (also a resumed run)")
    parser.add_argument("--only", choices=sorted(PUBLISHED | PUBLISHED_2L), help="train and evaluate one of the runs")
    args = parser.parse_args()
    published = PUBLISHED if args.layers == 1 else PUBLISHED_2L
    if args.only and args.only not in published:
        parser.error(f"--only {args.only} is not a run of --layers {args.layers}: choose from {sorted(published)}")
    if args.layers == 2 and (args.fast or args.batch_size or args.lr or args.precision):
        parser.error("--layers 2 trains its presets: --fast, --batch-size, --lr and --precision are for --layers 1")
    args.names = [args.only] if args.only else list(published)
    return with_defaults(args)


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the folders, batch size and learning rate it leaves unset filled in (and
    ``--quick``'s own folders, budget and evaluation)."""
    folder = {1: "reproduce_burda_fast" if args.fast else "reproduce_burda", 2: "reproduce_burda2"}[args.layers]
    args.out = args.out or Path(f"benchmarks/results/{'reproduce_burda_fast' if args.fast else 'reproduce_burda'}.json")
    args.state = args.state or Path(f"benchmarks/state/{folder}")
    args.batch_size = args.batch_size or (FAST_BATCH_SIZE if args.fast else PAPER_BATCH_SIZE)
    args.lr = args.lr or PAPER_LR
    if quick_folders(args):
        args.k, args.hours, args.eval_points = 50, 1.0, 1000
    return args


def run_config(name: str, args: argparse.Namespace) -> Config:
    """The config of run ``name`` under this call's options: a two-layer run's preset
    (:data:`PRESETS_2L`), or the one-layer runs' paper's (or ``--fast``) settings."""
    if name in PRESETS_2L:
        train = {"threads": args.threads, "compile": args.compile, "diagnostics_every": DIAGNOSTICS_EVERY}
        return load_config(None, {"model": {"preset": PRESETS_2L[name]}, "train": train})
    precision = args.precision or (FAST_PRECISION[name] if args.fast else "fp32")
    return config_for(name, batch_size=args.batch_size, lr=args.lr, threads=args.threads, precision=precision,
                      compile=args.compile)  # fmt: skip


def train_and_evaluate(args: argparse.Namespace) -> dict:
    """Each run of this call trained for its share of ``--hours`` (to its last pass at most: the
    schedule's, or 2 with ``--quick``), then evaluated."""
    results = {}
    budget = args.hours * 3600 / len(args.names)
    for name in args.names:
        run_dir = args.state / name
        config = run_config(name, args)
        passes = 2 if args.quick else config.train.epochs
        train(run_dir, config, deadline=time.monotonic() + budget, max_epochs=passes)
        finished = epochs_done(run_dir) >= passes
        results[name] = evaluate(run_dir, k=args.k, points=None if finished else args.eval_points)
        published = (PUBLISHED | PUBLISHED_2L)[name]
        results[name].update(passes_total=config.train.epochs, published_nll=published["nll"],
                             published_active_units=published.get("active_units"),
                             curve=bound_curve(run_dir / "metrics.csv"))  # fmt: skip
    return results


def settings_of(configs: dict[str, Config], *, layers: int) -> dict:
    """The runs' recipe, per run where it can differ."""
    schedule = "burda 3^i" if layers == 1 else {
        name: f"{c.train.lr_schedule} over {c.train.epochs} passes after a {c.train.lr_warmup}-pass warm-up, "
              f"KL warm-up {c.remedies.kl_warmup} passes" for name, c in configs.items()}  # fmt: skip
    return {"batch_size": {name: c.train.batch_size for name, c in configs.items()},
            "lr": {name: c.train.lr for name, c in configs.items()},
            "precision": {name: c.train.precision for name, c in configs.items()},
            "adam_eps": 1e-4, "schedule": schedule,
            "binarisation": "dynamic (train), one fixed draw (test)", "validation": "none, 60,000 train"}  # fmt: skip


def merged_settings(previous: dict, current: dict) -> dict:
    """``current`` settings with the per-run entries of ``previous`` kept for runs it lacks: a
    finished run's state leaves the tree, its recipe stays in the report."""
    def kept(key: str, value):
        return {**previous[key], **value} if isinstance(value, dict) and isinstance(previous.get(key), dict) else value

    return {key: kept(key, value) for key, value in current.items()}


def report_of(args: argparse.Namespace, previous: dict, results: dict) -> dict:
    """``previous`` report with this call's runs merged in (the other runs' entries, written by
    their own processes, are kept): the one-layer runs at the top level, the two-layer runs
    under ``two_layers`` with their test NLLs as ``vae2_k1_test_nll`` and ``iwae2_k5_test_nll``."""
    section = previous.get("two_layers", {}) if args.layers == 2 else previous
    runs = {**section.get("runs", {}), **results}
    configs = {name: read_config(args.state / name) for name in runs if (args.state / name / CONFIG).exists()}
    settings = merged_settings(section.get("settings", {}), settings_of(configs, layers=args.layers))
    common = {"runs": runs, "settings": settings,
              "machine": machine_facts(args.threads), "timestamp": datetime.now(timezone.utc).isoformat()}  # fmt: skip
    names = PUBLISHED_2L if args.layers == 2 else PUBLISHED
    nlls = {f"{name}_test_nll": runs.get(name, {}).get("test_nll") for name in names}
    if args.layers == 2:
        return {**previous, "benchmark": "reproduce_burda", **nlls,
                "two_layers": {"variant": "fast recipe (burda-2l-fast presets)", **common}}  # fmt: skip
    return {**previous, "benchmark": "reproduce_burda", "quick": args.quick, "variant": variant_of(configs), **nlls,
            **common}  # fmt: skip


def main() -> None:
    args = parse_args()
    results = train_and_evaluate(args)
    with folder_lock(args.out.parent):
        previous = json.loads(args.out.read_text()) if args.out.exists() else {"quick": args.quick}
        report = report_of(args, previous, results)
        write_report(args.out, report)
        section = report["two_layers"] if args.layers == 2 else report
        figure = args.out.with_name(args.out.stem + ("_2l" if args.layers == 2 else "") + ".png")
        plot_progress(args.state, section["runs"], figure, layers=args.layers)
    for name, r in results.items():
        print(f"{name}: {r['passes_done']}/{r['passes_total']} passes, test NLL {r['test_nll']:.2f} "
              f"(published {r['published_nll']}), active units {r['active_units']} "
              f"(published {r['published_active_units']})")  # fmt: skip


if __name__ == "__main__":
    main()
