r"""Reproduce Tomczak and Welling (2018), the one-layer VAE + VampPrior on static MNIST (test NLL
85.57 nats; pythae's reproduction 85.79), against the standard-prior VAE of the same setup.

Two runs of one VAE, identical but for p(z): ``vamp`` (``model.prior = "vamp"``, the mixture of
the encoder's posteriors at 500 learned pseudo-inputs, p(z) = (1/500) sum_c q(z | u_c)) and
``standard`` (``model.prior = "normal"``, N(0, I)). Each trains on the negative ELBO, with
log q(z|x) - log p(z) as its KL term (one sample; a mixture has no closed-form KL), stops early
on the validation ELBO and reports ``*_test_nll``: the IWAE bound at k = 5,000 on the 10,000 test
images of its best checkpoint (``avi evaluate --checkpoint best``, :func:`run_evaluate`), the
paper's estimator of -ln p(x) (importance sampling with 5,000 samples).

The paper's setup (its Section 5 and its code, jmtomczak/vae_vampprior, whose experiment
defaults the search tool shows): 40 latent units; encoder and decoder each two layers of 300
gated units, h = (W x + b) * sigmoid(V x + c); Adam, lr 5e-4, batches of 100; a KL warm-up
rising linearly from 0 to 1 over 100 epochs; early stopping with a look-ahead of 50 epochs on the
validation set, at most 2,000 epochs; 500 pseudo-inputs for MNIST; Larochelle's statically
binarised MNIST (50,000/10,000/10,000). What this script runs instead, and why:

- two hidden layers of 300 ReLU units in both networks (784-300-300-40, mirrored), where the
  paper has gated units: ReLU is avi's default and the standard-prior run matched the paper with
  it; the width and depth are the paper's. ``vamp_gated`` is the VampPrior run with the paper's
  gated units (``model.activation = "gated"``), to measure what ReLU costs the VampPrior;
- avi's static MNIST (``data.binarize = "static-mnist"``): the same 50,000/10,000/10,000 split,
  binarised once by a fixed seed (:func:`avi.data.mnist.static_mnist`), not Larochelle's own draw
  (which avi does not ship): NLLs on the two draws differ by a few tenths of a nat at most;
- the paper's optimiser, batch size, constant rate and warm-up (``remedies.kl_warmup = 100``
  from weight 0, the weight of each epoch taken at its midpoint); avi's pseudo-inputs and their
  initialisation are :class:`avi.models.priors.VampPrior`'s;
- ``train.early_stop = 50`` on the validation ELBO (one sample per image, each epoch), where the
  paper watches its validation loss; the test NLL is the best epoch's (best.pt);
- at most :data:`EPOCHS` = 500 epochs in place of 2,000, the same cap for both runs: the
  warm-up ends at 100, leaving 400 at the full KL for the patience of 50 to end a run first
  (the paper does not say where its runs stopped); a pass of the VampPrior run costs about
  three of the standard run's (the encoder also runs on the 500 pseudo-inputs every step;
  :mod:`avi.models.priors` sums the 500 components as one matrix product), so on one core
  (``--quick`` measures it) 500 passes are about 4 hours for it, about one for the standard
  prior; a run that reaches the cap says so (``early_stopped: false``).

Runs resume from their checkpoints, so the reproduction goes on across calls and sessions until
each run stops early or reaches :data:`EPOCHS`. On two cores, train the two runs as two
one-thread processes:

    python benchmarks/reproduce_vampprior.py --only vamp --hours 5       # at most 5 h, then evaluate
    python benchmarks/reproduce_vampprior.py --only standard --hours 2
    python benchmarks/reproduce_vampprior.py --only vamp_gated --hours 5
    python benchmarks/reproduce_vampprior.py --quick    # a smoke run: 3 passes on 2,000 images

A finished run is evaluated at ``--k`` (5,000); an unfinished one at ``--interim-k`` (an interim
figure of its best checkpoint so far, labelled ``finished: false``). The VampPrior's k = 5,000
evaluation takes about a quarter of an hour of one thread (benchmarks/vampprior_speed.py: 91 s
per 1,000 test images). Each process merges its
run's entry into the JSON under a lock on the results folder. State:
``benchmarks/state/reproduce_vampprior/``; results: ``benchmarks/results/reproduce_vampprior.json``.

Published (test NLL, nats, one stochastic layer, static MNIST): VAE + VampPrior 85.57 (Tomczak
and Welling 2018, Table 2); pythae's reproduction 85.79; the paper's VAE with N(0, I) 88.56.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from avi.runs.config import Config, load_config
from avi.runs.evaluate import run_evaluate
from avi.runs.rundir import CHECKPOINT, read_metrics
from avi.runs.train import run_fit
from machine import folder_lock, machine_facts, write_report
from reproduce_burda import epochs_done, last_wall_seconds, left_the_tree, pass_seconds, quick_folders, run_parser

#: the runs: their prior p(z) and the units of their networks (``vamp_gated``: the paper's gated
#: units, to measure what the ReLU units of ``vamp`` cost)
RUNS = {"vamp": ("vamp", "relu"), "standard": ("normal", "relu"), "vamp_gated": ("vamp", "gated")}
#: the published test NLLs (nats): Tomczak and Welling's Table 2 (pythae's VampPrior: 85.79)
PUBLISHED = {"vamp": 85.57, "standard": 88.56, "vamp_gated": 85.57}
#: the cap on a run's passes over the 50,000 training images; early stopping ends it sooner
EPOCHS = 500
TRAIN_IMAGES = 50_000
#: epochs of the KL warm-up, and the early-stopping patience (epochs without a better validation ELBO)
WARMUP_EPOCHS, PATIENCE = 100, 50
QUICK_EPOCHS, QUICK_IMAGES, QUICK_PATIENCE, QUICK_K = 3, 2000, 2, 20


#: the per-epoch collapse diagnostics every this many epochs (and at each call's last): they
#: cost up to half of a pass and no training number depends on them
DIAGNOSTICS_EVERY = 10


def config_for(name: str, *, threads: int, epochs: int = EPOCHS, warmup: int = WARMUP_EPOCHS,
               patience: int = PATIENCE, subset: int | None = None) -> Config:  # fmt: skip
    """The run ``name``'s config: the 784-300-300-40 VAE with its prior and units, trained as the
    module docstring says for at most ``epochs`` passes (on the first ``subset`` training images
    where given)."""
    prior, activation = RUNS[name]
    return load_config(
        None,
        {
            "model": {"latent_dim": 40, "hidden": [300, 300], "activation": activation, "prior": prior},
            "data": {"binarize": "static-mnist", "subset": subset},
            "inference": {"family": "mean-field", "encoder_hidden": [300, 300]},
            "train": {
                "epochs": epochs,
                "batch_size": 100,
                "lr": 5e-4,
                "threads": threads,
                "early_stop": patience,
                "diagnostics_every": DIAGNOSTICS_EVERY,
            },
            "remedies": {"kl_warmup": warmup},
        },
    )


def best_epoch(run_dir: Path) -> int:
    """The epoch of the best validation ELBO so far (metrics.csv; 0 before the first)."""
    rows = [r for r in read_metrics(run_dir) if r.get("val_elbo") not in (None, "")]
    return int(max(rows, key=lambda r: float(r["val_elbo"]))["epoch"]) if rows else 0


def finished(run_dir: Path, *, max_epochs: int, patience: int) -> bool:
    """Whether the run has stopped early (``patience`` epochs past its best) or done ``max_epochs``."""
    done = epochs_done(run_dir)
    return done >= max_epochs or (done > 0 and done - best_epoch(run_dir) >= patience)


def train(run_dir: Path, config: Config, *, deadline: float) -> None:
    """Train until the run is :func:`finished` or the deadline passes, in calls of ``run_fit``
    (each rebuilds the run from its checkpoint, about 2 s): the first of one epoch, each next sized
    from the measured time per epoch to end at the deadline (at most 100 epochs)."""
    chunk, max_epochs, patience = 1, config.train.epochs, config.train.early_stop or 0
    torch.set_num_threads(config.train.threads or 1)  # --threads holds for a resumed run too
    while time.monotonic() < deadline and not finished(run_dir, max_epochs=max_epochs, patience=patience):
        done = epochs_done(run_dir)
        target = min(done + chunk, max_epochs)
        started = time.monotonic()
        if (run_dir / CHECKPOINT).exists():
            run_fit(run_dir=run_dir, resume=True, epochs=target, diagnostics_every=config.train.diagnostics_every)
        else:
            run_fit(config, run_dir, epochs=target)
        per_epoch = (time.monotonic() - started) / max(1, epochs_done(run_dir) - done)
        chunk = max(1, min(100, int((deadline - time.monotonic()) / per_epoch)))


def evaluate(run_dir: Path, *, k: int, done: bool, patience: int) -> dict[str, Any]:
    """The test NLL of the run's best checkpoint (IWAE-k bound, nats, with its standard error) and
    its test ELBO, with what produced them."""
    r = run_evaluate(run_dir, k=k, checkpoint="best")
    passes = epochs_done(run_dir)
    return {
        "finished": done,
        "early_stopped": done and passes - best_epoch(run_dir) >= patience,
        "passes_done": passes,
        "best_epoch": best_epoch(run_dir),
        "train_wall_seconds": last_wall_seconds(run_dir),
        **pass_seconds(run_dir, images=TRAIN_IMAGES, epochs=EPOCHS),
        "test_points": r["n"],
        "test_nll": -r["log_likelihood"],
        "test_nll_stderr": r["log_likelihood_stderr"],
        "test_nll_bound": -r["elbo"],
        "test_kl": r["kl"],
        "active_units": r["active_units"],
        "k": k,
        "evaluate_seconds": r["seconds"],
    }


def report_of(runs: dict[str, dict], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON report: the headline NLLs, the runs, the recipe and the machine."""
    return {
        "benchmark": "reproduce_vampprior",
        "quick": args.quick,
        **{f"{n}_test_nll": runs.get(n, {}).get("test_nll") for n in RUNS},
        "published_test_nll": PUBLISHED | {"vamp_pythae": 85.79},
        "runs": runs,
        "recipe": {"model": "784-300-300-40-300-300-784 ReLU (vamp_gated: gated units), Bernoulli",
                   "batch_size": 100,
                   "optimiser": "Adam lr 5e-4, constant", "kl_warmup": f"0 -> 1 over {WARMUP_EPOCHS} epochs",
                   "early_stop": f"patience {PATIENCE} on the validation ELBO, best checkpoint scored",
                   "max_epochs": EPOCHS, "pseudo_inputs": 500,
                   "data": "static-mnist, 50,000/10,000/10,000"},
        "machine": machine_facts(args.threads),
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }  # fmt: skip


def main() -> None:
    parser = run_parser(__doc__, "reproduce_vampprior", RUNS, quick="3 passes on 2,000 images, k = 20")
    parser.add_argument("--k", type=int, default=5000, help="importance samples of a finished run's test NLL")
    parser.add_argument("--interim-k", type=int, default=100, help="importance samples of an unfinished run's")
    args = parser.parse_args()
    epochs, warmup, patience, subset = EPOCHS, WARMUP_EPOCHS, PATIENCE, None
    if quick_folders(args):
        args.k = args.interim_k = QUICK_K
        epochs, warmup, patience, subset = QUICK_EPOCHS, 1, QUICK_PATIENCE, QUICK_IMAGES
    names = [args.only] if args.only else sorted(RUNS)
    budget = args.hours * 3600 / len(names)
    results = {}
    for name in names:
        config = config_for(name, threads=args.threads, epochs=epochs, warmup=warmup, patience=patience,
                            subset=subset)  # fmt: skip
        run_dir = args.state / name
        if left_the_tree(args.out, name, run_dir):
            continue
        train(run_dir, config, deadline=time.monotonic() + budget)
        done = finished(run_dir, max_epochs=epochs, patience=patience)
        results[name] = evaluate(run_dir, k=args.k if done else args.interim_k, done=done, patience=patience)
        results[name] |= {"epochs_cap": epochs, "published_test_nll": PUBLISHED[name]}
    with folder_lock(args.out.parent):
        previous = json.loads(args.out.read_text())["runs"] if args.out.exists() else {}
        write_report(args.out, report_of(previous | results, args))  # the other process's run is kept
    for name, r in results.items():
        print(
            f"{name}: {r['passes_done']} passes, best {r['best_epoch']} ({r['seconds_per_pass']:.1f} s per "
            f"50,000 images, at most {r['estimated_hours']:.1f} h for {EPOCHS}), test NLL IWAE k={r['k']} "
            f"{r['test_nll']:.2f} (published {PUBLISHED[name]}), bound {r['test_nll_bound']:.2f}"
        )


if __name__ == "__main__":
    main()
