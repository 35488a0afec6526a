r"""Reproduce Rezende and Mohamed (2015), Table 2, on this machine: binarised MNIST, 40 latent
units, a diagonal Gaussian q against a planar flow of length K = 10.

Runs of one VAE, trained on the negative ELBO (the paper's free energy F) and differing in
q(z|x): ``diag`` (``inference.family = "mean-field"``) and ``planar_k10`` (``planar``,
``inference.flow_length = 10``, every flow parameter from the encoder as in the paper), each
early on annealed either by avi's KL warm-up (``diag``, ``planar_k10``) or as the paper did
(``diag_tempered``, ``planar_k10_tempered``; see below). Each reports two numbers on the
10,000 test images from ``avi evaluate`` (:func:`run_evaluate`): ``*_test_nll_bound``, the
negative test ELBO (a one-sample estimate per image, averaged), which is the paper's quantity,
-ln p(x) <= -F; and ``*_test_nll_iwae``, the IWAE bound at k = 5,000, a tighter estimate of the
NLL that the paper does not give.

The paper's setup (its Section 6, as far as it can be checked here; the search tool's copies of
the paper hold only its opening): a deep latent Gaussian model with one stochastic layer of 40
units, deterministic layers of 400 maxout units (window 4) in both networks, RMSprop (momentum
0.9, lr 1e-5) on minibatches of 100 for 500,000 updates, and an annealed free energy whose
inverse temperature rises linearly from 0.01 to 1 over the first 10,000 updates. What this
script runs instead, and why:

- one hidden layer of 400 ReLU units in the encoder and the decoder (400 is the paper's width
  and avi's MNIST default); ``diag_maxout`` has the paper's 400 maxout units of 4 pieces
  (``model.activation = "maxout"``), to measure how much of the diagonal run's shortfall the
  units are;
- dynamic binarisation of all 60,000 training images (avi's default; the paper says only
  "binarised"; ``data.binarize = "static-mnist"`` would train on Larochelle's 50,000), the test
  images binarised once;
- Adam, lr 1e-3, batch 100, a cosine decay over the run, for the paper's number of updates:
  500,000 of 100 images, 833 passes (RMSprop at lr 1e-5 would need all of them; Adam at a larger
  rate is the common choice of later reproductions and converges well within them);
- the annealing, over the first 17 passes (10,000 updates of 100 images; per pass, at its
  midpoint): the ``*_tempered`` runs temper as the paper does (``remedies.temper``: the inverse
  temperature on log p(x, z) from 0.01 to 1, log q unweighted), the others use avi's KL warm-up
  (``remedies.kl_warmup``: the weight of log q - log p(z) from 0.01 to 1). The warm-up runs came
  first; their planar layers all saturated (docs/results.md), which tempering, keeping q broad
  early on, was meant to avoid (it did not);
- ``planar_k10_centred`` is ``planar_k10`` with centred layers (``inference.flow_centred``: each
  hyperplane w^T (z - c_k) + b = 0 about the image c_k of the base mean, the same family
  parametrised so that the encoder's offsets start, and tend to stay, inside q's mass);
- all 60,000 images in training, no validation split: the recipe is fixed in advance and the
  last epoch is the model reported (nothing is selected on the test set).

A preset in ``src/avi/runs/config.py`` (``PRESETS``) would be the clean home for this model; the
script builds its config itself (:func:`config_for`). Runs resume from their checkpoints, so the
reproduction goes on across calls and sessions until every pass is done. On two cores, train the
two runs as two one-thread processes:

    python benchmarks/reproduce_flows.py --only diag --hours 6          # at most 6 h, then evaluate
    python benchmarks/reproduce_flows.py --only planar_k10 --hours 6
    python benchmarks/reproduce_flows.py --only planar_k10_tempered --hours 6
    python benchmarks/reproduce_flows.py --only planar_k10_centred --hours 6
    python benchmarks/reproduce_flows.py --only diag_maxout --hours 6
    python benchmarks/reproduce_flows.py --quick       # a smoke run: 3 passes on 6,000 images

A finished run is evaluated at ``--k`` (5,000); an unfinished one at ``--interim-k`` (an interim
figure, labelled ``finished: false``). Each process merges its run's entry into the JSON under a
lock on the results folder. State: ``benchmarks/state/reproduce_flows/``; results:
``benchmarks/results/reproduce_flows.json``.

Published (Table 2, upper bounds on the test NLL, nats): diagonal Gaussian <= 89.9; planar flow
K = 10 <= 87.5 (K = 20: 86.5; K = 40: 85.1).
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
from avi.runs.load import load_trained
from machine import folder_lock, machine_facts, write_report
from reproduce_burda import (
    epochs_done,
    last_wall_seconds,
    left_the_tree,
    pass_seconds,
    quick_folders,
    run_parser,
    train,
)

#: the runs: their variational family and flow length (None: the family has none)
RUNS: dict[str, tuple[str, int | None]] = {
    "diag": ("mean-field", None),
    "planar_k10": ("planar", 10),
    "diag_tempered": ("mean-field", None),
    "planar_k10_tempered": ("planar", 10),
    "planar_k10_centred": ("planar", 10),
    "diag_maxout": ("mean-field", None),
}
#: the runs whose hidden units are maxout units of 4 pieces, as the paper's (the others: ReLU)
MAXOUT = ("diag_maxout",)
#: the runs whose flow layers are centred (``inference.flow_centred``)
CENTRED = ("planar_k10_centred",)
#: the runs annealed as the paper did (``remedies.temper``); the others by avi's KL warm-up
TEMPERED = ("diag_tempered", "planar_k10_tempered")
#: Table 2's upper bounds on the test NLL (nats)
PUBLISHED = {"diag": 89.9, "planar_k10": 87.5, "diag_tempered": 89.9, "planar_k10_tempered": 87.5,
             "planar_k10_centred": 87.5, "diag_maxout": 89.9}  # fmt: skip
#: passes over the 60,000 training images of a full run: the paper's 500,000 updates of 100 images
EPOCHS = 833
TRAIN_IMAGES = 60_000
#: passes of the KL warm-up: the paper's 10,000 updates of 100 images
WARMUP_EPOCHS = 17
QUICK_EPOCHS, QUICK_IMAGES = 3, 6000


#: the per-epoch collapse diagnostics every this many epochs (and at each call's last): they
#: cost up to half of a pass and no training number depends on them
DIAGNOSTICS_EVERY = 10


def config_for(name: str, *, threads: int, epochs: int = EPOCHS, warmup: int = WARMUP_EPOCHS,
               subset: int | None = None) -> Config:  # fmt: skip
    """The run ``name``'s config: the 784-400-40 ReLU VAE with its family, trained as the module
    docstring says for ``epochs`` passes (on the first ``subset`` training images where given)."""
    family, length = RUNS[name]
    inference: dict[str, Any] = {"family": family} | ({"flow_length": length} if length else {})
    inference |= {"flow_centred": True} if name in CENTRED else {}
    return load_config(
        None,
        {
            "model": {"latent_dim": 40, "hidden": [400], "activation": "maxout" if name in MAXOUT else "relu"},
            "data": {"validation_fraction": 0.0, "subset": subset},
            "inference": inference | {"encoder_hidden": [400]},
            "train": {
                "epochs": epochs,
                "batch_size": 100,
                "lr": 1e-3,
                "lr_schedule": "cosine",
                "threads": threads,
                "diagnostics_every": DIAGNOSTICS_EVERY,
            },
            "remedies": {"temper": warmup} if name in TEMPERED else {"kl_warmup": warmup, "kl_start_weight": 0.01},
        },
    )


def evaluate(run_dir: Path, *, k: int, finished: bool) -> dict[str, Any]:
    """The run's test bounds (nats, lower is better): the negative ELBO (the paper's), and the
    IWAE-k bound with its standard error, with what produced them; for a flow, how much each
    layer reshapes q (``avi evaluate``'s ``flow_layer_reshaping``, None for the diagonal runs)."""
    r = run_evaluate(run_dir, k=k)
    return {
        "finished": finished,
        "passes_done": epochs_done(run_dir),
        "train_wall_seconds": last_wall_seconds(run_dir),
        **pass_seconds(run_dir, images=TRAIN_IMAGES, epochs=EPOCHS),
        "test_points": r["n"],
        "test_nll_bound": -r["elbo"],
        "test_nll_iwae": -r["log_likelihood"],
        "test_nll_iwae_stderr": r["log_likelihood_stderr"],
        "test_kl": r["kl"],
        "active_units": r["active_units"],
        "flow_layer_reshaping": r["flow_layer_reshaping"],
        "k": k,
        "evaluate_seconds": r["seconds"],
    }


#: how many test points and samples a point :func:`planar_layer_use` looks at
USE_POINTS, USE_SAMPLES = 2000, 100


def planar_layer_use(run_dir: Path) -> dict[str, list[float]]:
    """What each planar layer F(z) = z + u_hat tanh(w^T z + b) of a trained run does on the first
    :data:`USE_POINTS` test points, :data:`USE_SAMPLES` draws of q each: ``straddled``, the
    fraction of points whose draws fall on both sides of the layer's hyperplane w^T z + b = 0
    (where none do, the layer moves each point's draws by one vector, +-u_hat: a shift of q's
    mean, not a change of its shape); ``saturated``, the fraction of draws with |tanh| > 0.99;
    ``mean_log_det``, the mean of log |det dF/dz|. Layers in the order they apply."""
    run = load_trained(run_dir, torch.device("cpu"))
    x = run.splits.test.x[:USE_POINTS]
    generator = torch.Generator().manual_seed(0)
    use: dict[str, list[float]] = {"straddled": [], "saturated": [], "mean_log_det": []}
    with torch.no_grad():
        q = run.posterior(x)
        z = q.loc + q.scale * torch.randn((USE_SAMPLES, *q.loc.shape), generator=generator)
        for layer in q.layers:
            pre = (layer.w * z).sum(-1) + layer.b  # w^T z + b: (samples, points)
            side = pre > 0
            use["straddled"].append((side.any(0) & ~side.all(0)).float().mean().item())
            use["saturated"].append((torch.tanh(pre).abs() > 0.99).float().mean().item())
            z, log_det = layer(z)
            use["mean_log_det"].append(log_det.mean().item())
    return use


def report_of(runs: dict[str, dict], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON report: the headline bounds, the runs, the recipe and the machine."""
    return {
        "benchmark": "reproduce_flows",
        "quick": args.quick,
        **{f"{n}_test_nll_bound": runs.get(n, {}).get("test_nll_bound") for n in RUNS},
        **{f"{n}_test_nll_iwae": runs.get(n, {}).get("test_nll_iwae") for n in RUNS},
        "published_test_nll_bound": PUBLISHED,
        "runs": runs,
        "recipe": {"model": "784-400-40-400-784 ReLU (*_maxout: maxout, 4 pieces), Bernoulli", "batch_size": 100,
                   "optimiser": "Adam lr 1e-3, cosine",
                   "kl_warmup": f"0.01 -> 1 over {WARMUP_EPOCHS} passes",
                   "tempering": f"*_tempered: inverse temperature 0.01 -> 1 over {WARMUP_EPOCHS} passes",
                   "centred": "*_centred: inference.flow_centred (layers about the image of the base mean)",
                   "epochs": EPOCHS,
                   "binarisation": "dynamic (train), one fixed draw (test)", "validation": "none, 60,000 train"},
        "machine": machine_facts(args.threads),
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }  # fmt: skip


def main() -> None:
    parser = run_parser(__doc__, "reproduce_flows", RUNS, quick="3 passes on 6,000 images, k = 50")
    parser.add_argument("--k", type=int, default=5000, help="importance samples of a finished run's test NLL")
    parser.add_argument("--interim-k", type=int, default=100, help="importance samples of an unfinished run's")
    args = parser.parse_args()
    epochs, subset = EPOCHS, None
    if quick_folders(args):
        args.k = args.interim_k = 50
        epochs, subset = QUICK_EPOCHS, QUICK_IMAGES
    names = [args.only] if args.only else sorted(RUNS)
    budget = args.hours * 3600 / len(names)
    results = {}
    for name in names:
        config = config_for(name, threads=args.threads, epochs=epochs, warmup=1 if args.quick else WARMUP_EPOCHS,
                            subset=subset)  # fmt: skip
        run_dir = args.state / name
        if left_the_tree(args.out, name, run_dir):
            continue
        train(run_dir, config, deadline=time.monotonic() + budget, max_epochs=epochs)
        finished = epochs_done(run_dir) >= epochs
        results[name] = evaluate(run_dir, k=args.k if finished else args.interim_k, finished=finished)
        results[name] |= {"epochs_total": epochs, "published_test_nll_bound": PUBLISHED[name]}
        if RUNS[name][0] == "planar":
            results[name]["planar_layers"] = planar_layer_use(run_dir)
    with folder_lock(args.out.parent):
        previous = json.loads(args.out.read_text())["runs"] if args.out.exists() else {}
        write_report(args.out, report_of(previous | results, args))  # the other process's run is kept
    for name, r in results.items():
        print(
            f"{name}: {r['passes_done']}/{epochs} passes ({r['seconds_per_pass']:.1f} s per 60,000 images, "
            f"{r['estimated_hours']:.1f} h for {EPOCHS}), test NLL bound "
            f"{r['test_nll_bound']:.2f} (published <= {PUBLISHED[name]}), IWAE k={r['k']} {r['test_nll_iwae']:.2f}"
        )


if __name__ == "__main__":
    main()
