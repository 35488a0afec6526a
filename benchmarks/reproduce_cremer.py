r"""Reproduce Cremer, Li and Duvenaud (2018), "Inference Suboptimality in Variational
Autoencoders" (ICML, PMLR 80), Table 2, MNIST columns: the inference gap log p(x) - L[q] of a
VAE split into an approximation gap log p(x) - L[q*] and an amortization gap L[q*] - L[q], for
a model trained with a fully factorised Gaussian q (``ffg``) and one trained with a flow q
(``flow``; the paper's auxiliary flow, AF).

Two runs of one VAE, identical but for q(z|x): ``ffg`` (``inference.family = "mean-field"``)
and ``flow`` (``"planar"``). Once a run has finished training, :func:`avi.runs.gaps.run_gaps`
decomposes its gap twice on the first :data:`POINTS` = 1,000 training images (the paper's
points): with the mean-field family (q*_FFG, per-point Gaussians refined from an encoder; log
p(x) by annealed importance sampling from q*_FFG) and with the flow family (q*_AF; log p(x) by
the IWAE bound with 5,000 samples from q*_AF). For the run's own family the encoder is its
own, so that decomposition also gives L[q]; for the other family avi first trains a new
encoder of that family against the fixed decoder (``encoder_epochs``), as the paper's Section
5.2 does for its cross-family figures. The row of the table per run: log p^(x), the larger of
the two log p(x) estimates (the paper takes the larger of AIS and IWAE); L[q*_AF], L[q*_FFG],
L[q]; approximation gap log p^(x) - L[q*] (q* of the run's own family), amortization gap, and
inference gap log p^(x) - L[q].

The paper's setup, from its text as far as it could be read here and from the authors' code
(github chriscremer/Inference-Suboptimality: models/, flow_effect_on_amort_exp/train_mnist.py,
test_different_dists/compute_gaps3.py, models/optimize_local_q.py, models/utils/ais4.py; and
the second author's github lxuechen/inference-suboptimality: run.py, vae.py, local_ffg.py,
local_flow.py, utils/approx_posts.py, utils/helper.py, utils/ais.py, utils/hmc.py):

- model: 50 latent units; encoder 784-200-200-100 and decoder 50-200-200-784, ELU units, a
  Bernoulli likelihood (lxuechen vae.py; chriscremer's MNIST scripts use the same sizes);
- flow (AF): a RealNVP-like flow on z with an auxiliary variable v, q(v0|z0) and a reverse
  model r(vT|zT), 2 flow steps; hidden layers of 200 ELU units, the flow also fed an encoder
  feature of x (lxuechen utils/approx_posts.py) or of 50 units on z alone (chriscremer
  models/distributions.py ``Flow``);
- data: Larochelle and Murray's statically binarised MNIST (chriscremer loads
  ``binarized_mnist.pkl``; lxuechen's loader reads the 50,000 + 10,000 images of
  ``mnist.pkl`` as training data);
- training: Adam with Burda et al.'s schedule, stage i = 0..7 of 3^i epochs at lr 1e-3 *
  10^(-i/7), 3,280 epochs; a warm-up that weights log q(z|x) by min(1, epoch / 100)
  (chriscremer) or / 400 (lxuechen), 1 sample; batches of 20 (chriscremer's MNIST scripts) or
  100 (lxuechen run.py);
- the gaps are computed on the first 1,000 training images (lxuechen utils/helper.py
  ``partial_train``, num=1000; chriscremer compute_gaps3.py ``train_x[:n_data]``);
- q*: a new q for each point (a Gaussian from mean 0, log-variance 0; a flow from a fresh
  initialisation, all its weights optimised for that point), Adam lr 1e-3, 50 samples per
  step (chriscremer; 100 in lxuechen), checked every 100 steps and stopped after 10 checks
  without a better mean; L[q*] then from 5,000 samples, and the IWAE bound of those samples;
- log p(x): AIS from the prior along p(z) p(x|z)^t, 100 chains per point, 5,000
  (chriscremer compute_gaps3.py) or 10,000 (lxuechen run.py) intermediate distributions on a
  linear schedule, one HMC step of 10 leapfrog steps each, the step size adapted towards an
  acceptance rate of 0.65; and the IWAE bound with 5,000 samples of q*.

What this script runs instead, and why:

- the flow is a planar flow (Rezende and Mohamed 2015) of :data:`FLOW_LENGTH` = 10 layers on a
  diagonal Gaussian, all its parameters output by the encoder (``inference.family =
  "planar"``): avi has no auxiliary-variable flow, and of its flows the planar, radial and
  Sylvester families are those whose every parameter is per point (an IAF's or NSF's
  network weights are shared, only its context is per point). That is what the paper's q*_AF
  needs: the gaps' q* is "a new flow for each point, all its weights optimised", which the
  per-point refinement of a planar q is exactly (:func:`avi.evaluation.gaps.gap_decomposition`
  refines every parameter the encoder outputs). For the ``ffg`` run, q*_AF's refinement starts
  from a new planar encoder trained :data:`ENCODER_EPOCHS` = 20 epochs against the fixed
  decoder, with the run's warm-up (5 epochs) and cosine decay over those 20 (at the peak rate
  throughout, it diverged in its 20th epoch and gave L[q] = -189,320); a planar flow of 10
  layers is less expressive than the paper's two RealNVP-like steps with an auxiliary variable,
  so L[q*_AF] may fall short of the paper's. The layers are uncentred, as Rezende and Mohamed's:
  centred layers (``inference.flow_centred``), which stay in use in the Rezende and Mohamed
  checks, made this recipe diverge at pass 10 (the KL weight 0.085 let q contract: training KL
  200-330 nats, u_hat^T w at the bound -1 in nine of ten layers for some points, so log det ->
  -inf where draws cross a hyperplane); uncentred layers saturate into shifts (docs/results.md)
  but train. The ``ffg`` run's new planar encoder has the ``flow`` run's settings
  (:data:`NEW_ENCODER`, ``avi gaps --set``);
- q* starts from the encoder's output, not from N(0, I): :data:`REFINE_STEPS` = 2,000 Adam
  steps (lr 0.05, cosine decay, 4 samples a step; avi's defaults), with avi's convergence
  check (a second run of half the steps on 100 points, ``q_star_converged``) in place of the
  paper's stopping rule; every ELBO from 100 samples per point (the paper: 5,000);
- AIS starts from q*_FFG rather than the prior (a far better start, so far fewer steps are
  needed): :data:`AIS_STEPS` = 500 intermediate distributions, 100 chains, one HMC step of
  5 leapfrog steps each (avi's :func:`avi.evaluation.ais.ais_log_likelihood`), the step size
  adapted per chain towards 0.65; in place of 5,000-10,000 from the prior with 10 leapfrog
  steps, which would cost 20-40 times as much (AIS needs log q of its own samples only at
  the start, so the Gaussian q*_FFG serves both runs);
- avi's static MNIST (``data.binarize = "static-mnist"``, 50,000/10,000/10,000, binarised
  once by a fixed seed, not Larochelle's draw, which avi does not ship); training uses the
  50,000 training images only (the 10,000 validation images are scored but not trained on);
- avi's KL warm-up (``remedies.kl_warmup`` = 100 epochs from weight 0): it weights
  log q(z|x) - log p(z) where the paper weights log q(z|x) alone;
- the fast recipe of ``--preset burda-1l-fast`` (benchmarks/time_to_nll.py) in place of Burda
  et al.'s schedule over 3,280 epochs: batches of 250, Adam (eps 1e-4) at lr 3e-3 after a
  5-epoch linear warm-up, cosine decay to 0 over :data:`EPOCHS` = 1,500 epochs. On Burda's
  784-200-200-50 VAE, the sizes of this one, it reached the published test NLL (86.51 against
  86.76) in 0.17 of the paper's-settings time on this host; the paper's settings here would
  cost 25-40 CPU hours of training for the two runs, the recipe 6-7. The gaps are
  differences between bounds of one trained model, so what the recipe may change is the model,
  not how the gaps are measured. The ``flow`` run peaks at :data:`FLOW_LR` = 1e-3, not 3e-3:
  a new 10-layer planar encoder trained on the finished ``ffg`` run's decoder at a constant
  3e-3 (Adam eps 1e-4, 40 epochs) went non-finite at epoch 12 for one of three seeds (and at
  eps 1e-8 another seed's encoder ran away at epoch 20), while at 1e-3 that seed trained
  smoothly to a better ELBO (-91.8 after 40 epochs against -94.8 to -95.2 for the seeds that
  survived 3e-3);

Runs resume from their checkpoints across calls and sessions until all :data:`EPOCHS` passes
are done; a finished run is decomposed once, in pieces of :data:`PIECE` points, each saved in
the run's folder (``cremer-FAMILY.json``, with the settings) when it is done, so a decomposition
too long for one call goes on in the next. An unfinished run gets an interim decomposition
at small settings (:data:`INTERIM`, labelled ``finished: false``). On two cores, train the two
runs as two one-thread processes:

    python benchmarks/reproduce_cremer.py --only ffg --hours 3     # at most 3 h of training, then gaps
    python benchmarks/reproduce_cremer.py --only flow --hours 5
    python benchmarks/reproduce_cremer.py --quick     # a smoke run: 2 passes on 500 images, tiny gaps

Cost (one thread of the shared 2-core AMD EPYC, both cores busy with other benchmarks; times
vary about 2x with the load): ``--quick`` measured 6.9 s a pass of 50,000 images for ``ffg``
and 15.0 s for ``flow``, 5.8 s of it validation and the collapse diagnostics (its one measured
gap between epochs had them; the full run computes them every :data:`DIAGNOSTICS_EVERY`
epochs), so about 2-3 and 4 hours of training. Gaps, per run (measured at a load average of
5): AIS 2.5e-4 s per chain-step, 1,000 points x 100 chains x 500 steps = 3.5 h; q* about 9 s
per 100 points x 200 steps, 15 min per family at 1,000 x 2,000; the new encoders and the IWAE
bound about 10 min. Each process merges its run's entry into the JSON
under a lock on the results folder. State: ``benchmarks/state/reproduce_cremer/``; results:
``benchmarks/results/reproduce_cremer.json``.

Published (Table 2, MNIST, nats; the numbers as recalled from the paper, not checked here
against a copy of its table, which none of the sources available held: each gap is the
difference of the rows above it to 0.01, which they are):

    model trained with           q_FFG     q_AF
    log p^(x)                   -89.80   -88.94
    L[q*_AF]                    -90.80   -90.38
    L[q*_FFG]                   -91.23  -113.54
    L[q]                        -92.57   -91.79
    approximation gap             1.43     1.44
    amortization gap              1.34     1.41
    inference gap                 2.77     2.85
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from avi.runs.config import Config, load_config
from avi.runs.gaps import merge_gaps, plot_gaps, run_gaps
from avi.runs.rundir import write_json
from machine import CpuSnapshot, cpu_snapshot, folder_lock, machine_facts, other_processes_cpus, write_report
from reproduce_burda import (
    epochs_done,
    last_wall_seconds,
    left_the_tree,
    pass_seconds,
    quick_folders,
    run_parser,
    train,
)

#: the runs: their variational family (the table's columns)
RUNS = {"ffg": "mean-field", "flow": "planar"}
#: Table 2's MNIST columns (nats), as recalled (the module docstring says how far they are checked)
PUBLISHED: dict[str, dict[str, float]] = {
    "ffg": {"log_px": -89.80, "elbo_q_star_flow": -90.80, "elbo_q_star_ffg": -91.23, "elbo_q": -92.57,
            "approximation_gap": 1.43, "amortization_gap": 1.34, "inference_gap": 2.77},
    "flow": {"log_px": -88.94, "elbo_q_star_flow": -90.38, "elbo_q_star_ffg": -113.54, "elbo_q": -91.79,
             "approximation_gap": 1.44, "amortization_gap": 1.41, "inference_gap": 2.85},
}  # fmt: skip
SOURCE = (
    "Cremer, Li and Duvenaud (2018), Inference Suboptimality in Variational Autoencoders, ICML, PMLR 80, "
    "Table 2, MNIST columns (recalled; each gap equals the differences of the rows to 0.01; not checked "
    "against a copy of the table, which none of the sources searched held)"
)
#: passes over the 50,000 training images: the fast recipe's (the paper: Burda et al.'s 3,280)
EPOCHS = 1500
TRAIN_IMAGES = 50_000
#: epochs of the KL warm-up (the paper's code: 100 or 400 epochs on log q alone)
WARMUP_EPOCHS = 100
#: the planar flow's layers (Rezende and Mohamed's K = 10; the paper's auxiliary flow has 2 steps)
FLOW_LENGTH = 10
#: the ``flow`` run's peak learning rate (the ``ffg`` run's is 3e-3: a planar encoder diverged there)
FLOW_LR = 1e-3
QUICK_EPOCHS, QUICK_IMAGES = 2, 500
#: the inference settings of a new encoder of each family (trained on the other run's fixed
#: decoder for its q*): the planar one as the flow run's own q
NEW_ENCODER: dict[str, dict[str, Any]] = {"planar": {"flow_length": FLOW_LENGTH}}


@dataclass(frozen=True)
class GapSettings:
    """One decomposition's settings: the first ``points`` training images, ``refine_steps``
    steps of q*, AIS with ``ais_steps`` steps and ``chains`` chains (mean-field), the IWAE bound
    with ``iwae_k`` samples (flow), a new encoder of the other family trained ``encoder_epochs``."""

    points: int
    refine_steps: int
    ais_steps: int
    chains: int
    iwae_k: int
    encoder_epochs: int


#: the paper's 1,000 training points; the other settings as the module docstring says
POINTS, REFINE_STEPS, AIS_STEPS, ENCODER_EPOCHS = 1000, 2000, 500, 20
FINAL = GapSettings(POINTS, REFINE_STEPS, AIS_STEPS, chains=100, iwae_k=5000, encoder_epochs=ENCODER_EPOCHS)
INTERIM = GapSettings(100, 500, 100, chains=20, iwae_k=500, encoder_epochs=2)
#: points per piece of a decomposition, each saved when done: a call (or a session) that ends
#: loses at most one piece (AIS of 200 points at the final settings: about 40 minutes of a quiet
#: core, 63-85 minutes measured beside three other processes on the two)
PIECE = 200
QUICK = GapSettings(20, 50, 10, chains=10, iwae_k=50, encoder_epochs=1)


#: the per-epoch collapse diagnostics every this many epochs (and at each call's last): they
#: cost up to half of a pass and no training number depends on them
DIAGNOSTICS_EVERY = 10


def config_for(name: str, *, threads: int, epochs: int = EPOCHS, warmup: int = WARMUP_EPOCHS,
               subset: int | None = None) -> Config:  # fmt: skip
    """The run ``name``'s config: the 784-200-200-50 ELU VAE with its family, trained as the
    module docstring says for ``epochs`` passes (on the first ``subset`` training images where given)."""
    return load_config(
        None,
        {
            "model": {"latent_dim": 50, "hidden": [200, 200], "activation": "elu"},
            "data": {"binarize": "static-mnist", "subset": subset},
            "inference": {"family": RUNS[name], "encoder_hidden": [200, 200]}
            | ({"flow_length": FLOW_LENGTH} if name == "flow" else {}),
            "train": {"epochs": epochs, "batch_size": 250, "lr": FLOW_LR if name == "flow" else 3e-3,
                      "lr_schedule": "cosine", "lr_warmup": 5,
                      "adam_eps": 1e-4, "threads": threads, "diagnostics_every": DIAGNOSTICS_EVERY},
            "remedies": {"kl_warmup": warmup},
        },
    )  # fmt: skip


def decompose(run_dir: Path, family: str, gaps: GapSettings, encoder: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_gaps` of the run with ``family`` on the first ``gaps.points`` training images
    (AIS for the mean-field family, the IWAE bound for a flow) in pieces of :data:`PIECE`
    points, merged by :func:`merge_gaps`. Each piece is saved in ``cremer-FAMILY.json`` when it
    is done, and a later call goes on from the first missing one where the saved settings are
    these, the passes trained included (a file's time would not survive a clone). Every piece
    starts from seed 1, so the new encoder of the other family (with the inference settings
    ``encoder``) is the same in each."""
    cache = run_dir / f"cremer-{family}.json"
    settings = asdict(gaps) | {"passes": epochs_done(run_dir)} | ({"encoder_settings": encoder} if encoder else {})
    pieces: list[dict[str, Any]] = []
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved["settings"] == settings:
            pieces = saved.get("pieces", [])
    ais = gaps.ais_steps if family == "mean-field" else 0
    for first in range(sum(piece["n"] for piece in pieces), gaps.points, PIECE):
        torch.manual_seed(1)
        piece = run_gaps(run_dir, family=family, split="train", points=min(PIECE, gaps.points - first), first=first,
                         steps=gaps.refine_steps, k=gaps.chains if ais else gaps.iwae_k, ais_steps=ais,
                         encoder_epochs=gaps.encoder_epochs, encoder_settings=encoder)  # fmt: skip
        pieces.append(piece)
        write_json(cache, {"settings": settings, "pieces": pieces})
    result = merge_gaps(pieces)
    write_json(run_dir / f"gaps-{family}-train.json", result)
    plot_gaps(run_dir)
    return result


def table_row(name: str, ffg: dict[str, Any], flow: dict[str, Any]) -> dict[str, Any]:
    """The run's row of Table 2 from its two decompositions: log p^(x) the larger of their log
    p(x) estimates, L[q] and the gaps' standard errors (over points, paired) from the
    decomposition of the run's own family."""
    own = ffg if name == "ffg" else flow
    log_px = max(ffg["log_likelihood"], flow["log_likelihood"])
    q_star = own["elbo_optimal"]
    return {
        "log_px": log_px,
        "log_px_method": (ffg if log_px == ffg["log_likelihood"] else flow)["log_likelihood_method"],
        "log_px_ais": ffg["log_likelihood"],
        "log_px_iwae": flow["log_likelihood"],
        "elbo_q_star_flow": flow["elbo_optimal"],
        "elbo_q_star_ffg": ffg["elbo_optimal"],
        "elbo_q": own["elbo_amortized"],
        "approximation_gap": log_px - q_star,
        "amortization_gap": q_star - own["elbo_amortized"],
        "inference_gap": log_px - own["elbo_amortized"],
        #: of own log p(x) - L[q*], paired over points (log p^(x) may come from the other decomposition)
        "approximation_gap_stderr": own["approximation_gap_stderr"],
        "amortization_gap_stderr": own["amortization_gap_stderr"],
        "q_star_converged": {"ffg": ffg["q_star_converged"], "flow": flow["q_star_converged"]},
    }


def evaluate(run_dir: Path, name: str, *, gaps: GapSettings, finished: bool) -> dict[str, Any]:
    """The run's row of the table (:func:`table_row`) with both decompositions and what produced them."""
    started = time.perf_counter()
    decompositions = {
        short: decompose(run_dir, family, gaps, {} if family == RUNS[name] else NEW_ENCODER.get(family, {}))
        for short, family in RUNS.items()
    }
    return {
        "finished": finished,
        "passes_done": epochs_done(run_dir),
        "train_wall_seconds": last_wall_seconds(run_dir),
        **pass_seconds(run_dir, images=TRAIN_IMAGES, epochs=EPOCHS),
        **table_row(name, decompositions["ffg"], decompositions["flow"]),
        "gap_settings": asdict(gaps),
        "gaps_wall_seconds": time.perf_counter() - started,
        "decompositions": decompositions,
        "published": PUBLISHED[name],
    }


def report_of(runs: dict[str, dict], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON report: the runs' rows beside the published ones, the recipe and the machine."""
    return {
        "benchmark": "reproduce_cremer",
        "quick": args.quick,
        **{name: runs.get(name) for name in RUNS},
        "published": {"source": SOURCE, **PUBLISHED},
        "recipe": {"model": "784-200-200-50-200-200-784 ELU, Bernoulli", "batch_size": 250,
                   "optimiser": "Adam (eps 1e-4), lr 3e-3 (flow: 1e-3) after a 5-epoch warm-up, cosine decay to 0",
                   "kl_warmup": f"0 -> 1 over {WARMUP_EPOCHS} epochs", "epochs": EPOCHS,
                   "flow": f"planar, {FLOW_LENGTH} layers, every parameter from the encoder",
                   "data": "static-mnist, 50,000 train images; gaps on the first training images",
                   "q_star": "Adam lr 0.05 cosine, 4 samples a step, from the encoder; every parameter per point",
                   "log_px": "max(AIS from q*_FFG, IWAE from q*_AF)"},
        "machine": machine_facts(args.threads),
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }  # fmt: skip


def parse_args() -> argparse.Namespace:
    args = run_parser(__doc__, "reproduce_cremer", RUNS, quick="2 passes on 500 images, tiny gaps").parse_args()
    quick_folders(args)
    return args


def merge_report(results: dict[str, dict], args: argparse.Namespace, started: CpuSnapshot) -> None:
    """Add this call's wall and CPU seconds (and the other processes' load) to each of its runs and
    merge them into the JSON under a lock, keeping the other process's run."""
    call = {"wall_seconds": time.perf_counter() - started.wall, "cpu_seconds": sum(os.times()[:2]) - started.own,
            "other_processes_cpus": other_processes_cpus(started)}  # fmt: skip
    for r in results.values():
        r["call"] = call
    with folder_lock(args.out.parent):
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        runs = {n: previous[n] for n in RUNS if previous.get(n)} | results
        write_report(args.out, report_of(runs, args))


def main() -> None:
    args = parse_args()
    epochs, subset = (QUICK_EPOCHS, QUICK_IMAGES) if args.quick else (EPOCHS, None)
    names = [args.only] if args.only else sorted(RUNS)
    budget = args.hours * 3600 / len(names)
    results, started = {}, cpu_snapshot()
    for name in names:
        config = config_for(name, threads=args.threads, epochs=epochs, warmup=1 if args.quick else WARMUP_EPOCHS,
                            subset=subset)  # fmt: skip
        run_dir = args.state / name
        if left_the_tree(args.out, name, run_dir):
            continue
        train(run_dir, config, deadline=time.monotonic() + budget, max_epochs=epochs)
        finished = epochs_done(run_dir) >= epochs
        gaps = QUICK if args.quick else FINAL if finished else INTERIM
        results[name] = evaluate(run_dir, name, gaps=gaps, finished=finished)
    merge_report(results, args, started)
    for name, r in results.items():
        print(
            f"{name}: {r['passes_done']}/{epochs} passes ({r['seconds_per_pass']:.1f} s per 50,000 images, "
            f"{r['estimated_hours']:.1f} h for {EPOCHS}); log p^(x) {r['log_px']:.2f}, L[q*_AF] "
            f"{r['elbo_q_star_flow']:.2f}, L[q*_FFG] {r['elbo_q_star_ffg']:.2f}, L[q] {r['elbo_q']:.2f}; "
            f"approximation {r['approximation_gap']:.2f}, amortization {r['amortization_gap']:.2f} "
            f"(published {PUBLISHED[name]['approximation_gap']}, {PUBLISHED[name]['amortization_gap']}); "
            f"gaps {r['gaps_wall_seconds']:.0f} s"
        )


if __name__ == "__main__":
    main()
