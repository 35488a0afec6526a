"""Gradient estimators compared on a discrete-latent MNIST VAE (the JSON's ``estimators``) and
on an amortized PPCA posterior (``ppca``): gradient variance, and the bound after a fixed budget.

Discrete VAE (``estimators``): :class:`avi.models.CategoricalVAE` with N = 20 categorical latents
of C = 10 classes (uniform prior), decoder 200-256-784 (ReLU), Bernoulli pixels; an amortized
:class:`avi.families.discrete.CategoricalFamily` posterior from an encoder 784-256-200. Model
and encoder are trained together by Adam (lr 1e-3, batch 100) through avi's step
(:func:`avi.inference.train_step`) for ``--steps`` steps (default 2,500) on the first
``--train`` (default 10,000) MNIST training images, binarised once (seed 0), from the same
initial weights for every estimator:

- ``score`` (REINFORCE), ``score-baseline`` (moving average), ``nvil`` (input-dependent learned
  baseline, trained in the same Adam), each on the ELBO with 1 sample per point;
- ``vimco``: the IWAE bound with k = 5 and VIMCO's leave-one-out baselines;
- ``gumbel`` and ``gumbel-st``: Gumbel-softmax relaxation at temperature 1 (Jang et al.
  2017), relaxed or straight-through (hard one-hot samples forward).

Per estimator: ``grad_variance``, the encoder gradient's variance summed over its parameters
(:func:`avi.evaluation.gradient_moments`, ``--draws`` draws, default 200) on one fixed batch of
100 images at the common initial weights (the moving-average and NVIL baselines first warmed
there for 200 steps); ``grad_variance_final``, the same at the estimator's own trained weights;
``elbo``, the test ELBO per image on the first 1,000 MNIST test images (binarised once, seed 1;
exact categorical KL, reconstruction from 10 samples of q) after training; ``log_likelihood``,
the IWAE estimate of log p(x) with k = 100 there; ``train_seconds``.

PPCA (``ppca``): D = 10, K = 3, fixed known parameters; an affine encoder of a full-rank Gaussian
q(z|x) trained alone by Adam (lr 1e-3) with each estimator, including the reparameterised ones;
``elbo`` and ``gap`` = log p(x) - ELBO exactly, initial ``grad_variance`` from 500 draws (2,000
steps on 2,000 points, batch 100).

``--quick`` (under a minute): 100 steps on 1,000 images, 20 gradient draws, 300 test images;
PPCA 100 steps, 50 draws.

Measured (results/estimators.json; 2 shared, loaded CPU cores, one thread, ~17 min): test ELBO
after 2,500 steps score -175.8, score-baseline -157.7, nvil -154.2, vimco -137.3 (k = 5: five
decoder passes per point), gumbel -136.3, gumbel-st -132.0; IWAE-100 log-likelihood -159.5,
-143.1, -141.0, -118.4, -115.4, -120.1. Encoder gradient variance at the common initial
weights 1.3e6 (score), 8.6 (score-baseline, nvil: the baseline removes the large, constant
learning signal), 0.55 (vimco), 0.02 (gumbel, gumbel-st); at each estimator's trained weights
5.1e5, 3.8e4, 1.7e4, 1.6e3, 254, 251. The Gumbel gradients are of the relaxed objective
(biased), VIMCO's of the IWAE bound. PPCA: gaps after 2,000 steps reparam 0.61, stl 0.60,
score 1.67, score-baseline 0.74, nvil 0.75, iwae-reparam 0.76, vimco 0.75, dreg 0.73.

Usage: ``python benchmarks/estimators.py [--quick] [--out PATH]`` (JSON, default
benchmarks/results/estimators.json).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from machine import brief_run_facts, write_report
from torch import Tensor, nn

from avi.data import load_mnist
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.evaluation import elbo_per_point, gradient_moments, log_likelihood
from avi.families import make_family
from avi.families.discrete import CategoricalFamily
from avi.inference import TrainState, train_step
from avi.models import CategoricalVAE, LatentVariableModel, LinearGaussian
from avi.objectives import ELBO, IWAE, NVILBaseline, Objective

D, K = 10, 3


def make_model() -> LinearGaussian:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D, K, generator=g, dtype=torch.float64)
    mu = torch.randn(D, generator=g, dtype=torch.float64)
    return LinearGaussian.from_parameters(W, mu, 0.5).requires_grad_(False)


def exact_elbo(model: LinearGaussian, posterior: AmortizedPosterior, x: Tensor) -> Tensor:
    """Mean log p(x) and mean ELBO = log p(x) - KL(q || p(z|x)), both in closed form."""
    with torch.no_grad():
        q, post = posterior(x), model.exact_posterior(x)
        kl = torch.distributions.kl_divergence(q, post)
        log_px = model.exact_log_marginal(x)
        return log_px.mean(), (log_px - kl).mean()


def with_state(objective: Objective, data_dim: int) -> tuple[Objective, nn.Module | None]:
    """The objective and a fresh estimator state of its own (``init_state``)."""
    return objective, objective.init_state(data_dim)


def ppca_estimators(data_dim: int) -> dict[str, Callable[[], tuple[Objective, nn.Module | None]]]:
    """name -> a fresh (objective, estimator state or None)."""
    return {
        "reparam": lambda: (ELBO(analytic_kl=False), None),
        "score": lambda: (ELBO(estimator="score"), None),
        "score-baseline": lambda: with_state(ELBO(estimator="score-baseline"), data_dim),
        "nvil": lambda: (ELBO(estimator="nvil"), NVILBaseline(data_dim).double()),  # float64, as the model
        "stl": lambda: (ELBO(estimator="stl"), None),
        "iwae-reparam": lambda: (IWAE(k=5), None),
        "vimco": lambda: (IWAE(k=5, estimator="vimco"), None),
        "dreg": lambda: (IWAE(k=5, estimator="dreg"), None),
    }


def warm_baseline(objective: Objective, baseline: nn.Module, model: LatentVariableModel, posterior: AmortizedPosterior,
                  batch: Tensor) -> None:  # fmt: skip
    """200 steps of avi's loop on ``batch`` that move only the baseline: a learned one (NVIL's) by
    its own Adam (lr 1e-2), a moving average by its update after each step."""
    extra = list(baseline.parameters())
    optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(extra, lr=1e-2)] if extra else []
    state = TrainState(model, posterior, optimizers, torch.Generator(), baseline)
    index = torch.arange(len(batch))
    for _ in range(200):
        train_step(state, batch, index, objective, batch=len(batch))


def train_random_batches(state: TrainState, objective: Objective, x_train: Tensor, steps: int) -> float:
    """``steps`` steps of avi's loop (:func:`avi.inference.train_step`) on batches of 100 drawn
    with replacement by ``state.generator``; returns the seconds they took."""
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(len(x_train), (100,), generator=state.generator)
        train_step(state, x_train[index], index, objective, batch=100)
    return time.perf_counter() - start


def run_ppca(make: Callable[[], tuple[Objective, nn.Module | None]], model: LinearGaussian,
             x_train: Tensor, x_test: Tensor, steps: int, lr: float, draws: int) -> dict[str, Any]:  # fmt: skip
    family = make_family("full-rank", K)
    torch.manual_seed(1)
    encoder = mlp_encoder(D, (), family.param_size).double()
    with torch.no_grad():  # start every estimator from q(z|x) = p(z) = N(0, I) for all x
        encoder[-1].weight.zero_()
        encoder[-1].bias.copy_(family.initial_params(1)[0])
    posterior = AmortizedPosterior(encoder, family)
    objective, baseline = make()
    batch = x_train[:100]
    extra = [] if baseline is None else list(baseline.parameters())
    if baseline is not None:  # warm the baseline at the initial encoder
        warm_baseline(objective, baseline, model, posterior, batch)
    moments = gradient_moments(lambda: objective(model, posterior(batch), batch, state=baseline).value.mean(),
                               dict(posterior.named_parameters()), num_draws=draws)  # fmt: skip
    grad_variance = sum(m.total_variance for m in moments.values())
    opt = torch.optim.Adam([*posterior.parameters(), *extra], lr=lr)  # the model stays fixed
    state = TrainState(model, posterior, [opt], torch.Generator().manual_seed(2), baseline)
    seconds = train_random_batches(state, objective, x_train, steps)
    log_px, elbo = exact_elbo(model, posterior, x_test)
    return {"grad_variance": grad_variance, "elbo": float(elbo), "gap": float(log_px - elbo),
            "train_seconds": round(seconds, 2)}  # fmt: skip


NUM_VARS, NUM_CLASSES, HIDDEN, TEMPERATURE = 20, 10, 256, 1.0


def discrete_estimators() -> dict[str, Callable[[], tuple[Objective, nn.Module | None]]]:
    """name -> a fresh (objective, estimator state or None)."""
    return {
        "score": lambda: (ELBO(estimator="score"), None),
        "score-baseline": lambda: with_state(ELBO(estimator="score-baseline"), 784),
        "nvil": lambda: with_state(ELBO(estimator="nvil"), 784),
        "vimco": lambda: (IWAE(k=5, estimator="vimco"), None),
        "gumbel": lambda: (ELBO(estimator="gumbel", temperature=TEMPERATURE), None),
        "gumbel-st": lambda: (ELBO(estimator="gumbel", temperature=TEMPERATURE, straight_through=True), None),
    }


def encoder_variance(objective: Objective, model: CategoricalVAE, posterior: AmortizedPosterior, batch: Tensor,
                     draws: int, state: nn.Module | None = None) -> float:  # fmt: skip
    params = {name: p for name, p in posterior.named_parameters()}
    moments = gradient_moments(lambda: objective(model, posterior(batch), batch, state=state).value.mean(), params,
                               num_draws=draws)  # fmt: skip
    return sum(m.total_variance for m in moments.values())


def run_discrete(make: Callable[[], tuple[Objective, nn.Module | None]], x_train: Tensor, x_test: Tensor,
                 steps: int, draws: int) -> dict[str, Any]:  # fmt: skip
    torch.manual_seed(1)  # the same initial model and encoder for every estimator
    family = CategoricalFamily(NUM_VARS, NUM_CLASSES)
    model = CategoricalVAE(784, NUM_VARS, NUM_CLASSES, hidden=(HIDDEN,))
    posterior = AmortizedPosterior(mlp_encoder(784, (HIDDEN,), family.param_size), family)
    objective, baseline = make()
    batch = x_train[:100]
    extra = [] if baseline is None else list(baseline.parameters())
    if baseline is not None:  # warm the baseline at the initial weights (only its own parameters move)
        warm_baseline(objective, baseline, model, posterior, batch)
    grad_variance = encoder_variance(objective, model, posterior, batch, draws, baseline)
    opt = torch.optim.Adam([*model.parameters(), *posterior.parameters(), *extra], lr=1e-3)
    state = TrainState(model, posterior, [opt], torch.Generator().manual_seed(2), baseline)
    seconds = train_random_batches(state, objective, x_train, steps)
    final_variance = encoder_variance(objective, model, posterior, batch, draws, baseline)
    torch.manual_seed(3)
    elbo = elbo_per_point(model, posterior, x_test, num_samples=10)[0].mean().item()
    ll = log_likelihood(model, posterior, x_test, k=100, chunk_size=100).value.mean().item()
    return {"grad_variance": grad_variance, "grad_variance_final": final_variance, "elbo": elbo,
            "log_likelihood": ll, "train_seconds": round(seconds, 1)}  # fmt: skip


def binarised(images: object, n: int, seed: int) -> Tensor:
    x = torch.from_numpy(images[:n]).float().flatten(1) / 255  # type: ignore[index]
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, under a minute")
    parser.add_argument("--steps", type=int, default=None, help="training steps per estimator (default 2,500; quick 100)")
    parser.add_argument("--train", type=int, default=None, help="training images (default 10,000; quick 1,000)")
    parser.add_argument("--draws", type=int, default=None, help="gradient draws for the variance (default 200; quick 20)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "estimators.json")
    args = parser.parse_args()
    steps = args.steps or (100 if args.quick else 2500)
    n_train = args.train or (1000 if args.quick else 10_000)
    n_test = 300 if args.quick else 1000
    draws = args.draws or (20 if args.quick else 200)
    ppca_steps, ppca_draws = (100, 50) if args.quick else (2000, 500)
    torch.set_num_threads(1)

    mnist = load_mnist()
    x_train, x_test = binarised(mnist["train"][0], n_train, 0), binarised(mnist["test"][0], n_test, 1)
    discrete = {}
    for name, make in discrete_estimators().items():
        discrete[name] = run_discrete(make, x_train, x_test, steps, draws)
        print(f"discrete VAE  {name:15s}", {k: round(v, 2) for k, v in discrete[name].items()}, flush=True)

    model = make_model()
    x, _ = model.sample(3000, torch.Generator().manual_seed(3))
    ppca = {}
    for name, make in ppca_estimators(D).items():
        ppca[name] = run_ppca(make, model, x[:2000], x[2000:], ppca_steps, 1e-3, ppca_draws)
        print(f"PPCA          {name:15s}", {k: round(v, 3) for k, v in ppca[name].items()}, flush=True)

    report = {
        "benchmark": "estimators",
        "quick": args.quick,
        "setup": {
            "model": f"discrete VAE: {NUM_VARS} categorical latents x {NUM_CLASSES} classes, 784-{HIDDEN}-{NUM_VARS * NUM_CLASSES} "
            f"encoder, {NUM_VARS * NUM_CLASSES}-{HIDDEN}-784 decoder, Bernoulli",
            "train_images": n_train,
            "test_images": n_test,
            "steps": steps,
            "batch_size": 100,
            "lr": 1e-3,
            "grad_draws": draws,
            "temperature": TEMPERATURE,
            "vimco_k": 5,
        },
        "estimators": discrete,
        "ppca": {
            "setup": {"model": f"PPCA D={D} K={K}", "encoder": "affine, full-rank Gaussian", "steps": ppca_steps,
                      "lr": 1e-3, "grad_draws": ppca_draws, "test_log_px": float(model.exact_log_marginal(x[2000:]).mean())},  # fmt: skip
            "estimators": ppca,
        },
        **brief_run_facts(),
    }
    assert all(math.isfinite(r["elbo"]) for r in [*discrete.values(), *ppca.values()])
    write_report(args.out, report)


if __name__ == "__main__":
    main()
