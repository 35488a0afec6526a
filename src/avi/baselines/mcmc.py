"""Markov chain Monte Carlo on a :class:`~avi.baselines.targets.Target`: the asymptotically exact
reference that variational inference trades away for speed.

Samplers written here follow the ``init`` / ``step`` shape (BlackJAX): a :class:`Kernel` holds
``init(u) -> state`` and ``step(state, generator) -> (state, info)`` with states and infos as
named tuples, all chains (and all independent posteriors of a batched target) advanced together
as one tensor, randomness from an explicit ``torch.Generator``.

- :func:`random_walk_mh_kernel`: random-walk Metropolis-Hastings in the unconstrained space of
  ``biject_to(target.support)`` (log-Jacobian added), u' = u + h L eps. During the ``adapt_steps``
  warm-up steps the step size h follows the Robbins-Monro recursion
  log h <- log h + t^-0.6 (alpha - alpha*) towards the acceptance rate alpha* (0.44 in one
  dimension, 0.234 in many; Roberts and Rosenthal 2001), and L becomes the Cholesky factor of the
  draws' covariance over the second quarter of warm-up (adaptive Metropolis, Haario et al. 2001).
- :func:`gibbs_kernel`: a systematic scan over the target's blocks, each redrawn from its
  conjugate full conditional (Geman and Geman 1984).
- :func:`nuts`: the No-U-Turn sampler (Hoffman and Gelman 2014) of Pyro, step size and diagonal
  mass matrix adapted in warm-up; Pyro draws from torch's global RNG, which is seeded from the
  generator for each chain and restored afterwards.

:func:`mh`, :func:`gibbs` and :func:`nuts` run several chains from dispersed starting points
(uniform on (-2, 2) in unconstrained space, as Stan does) and return :class:`Samples`, which
exports an ArviZ ``InferenceData`` and its split-R-hat and effective sample size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Transform, biject_to, constraints

from avi.baselines.targets import Target, check_count, forked_rng
from avi.errors import AviError

__all__ = [
    "Diagnostics",
    "GibbsInfo",
    "GibbsState",
    "Kernel",
    "MHInfo",
    "MHState",
    "Samples",
    "Unconstrained",
    "gibbs",
    "gibbs_kernel",
    "initial_positions",
    "mh",
    "nuts",
    "random_walk_mh_kernel",
    "sample_chains",
]


class Unconstrained:
    """The target in the unconstrained coordinates u of T = ``biject_to(support)``, theta = T(u):
    log p(data, T(u)) + log |det dT/du|, for u: (..., *batch_shape, dim)."""

    def __init__(self, target: Target) -> None:
        if target.support.is_discrete:
            raise AviError(
                f"{target.name} has a discrete latent; MCMC here needs a continuous one (use exact enumeration)"
            )
        self.target = target
        self.transform: Transform = biject_to(target.support)
        #: whether theta = u (the support is all of R^K)
        self.identity = target.support is constraints.real_vector
        self.dim = self.transform.inverse_shape((target.dim,))[-1]

    def log_prob(self, u: Tensor) -> Tensor:
        theta = self.transform(u)
        return self.target.log_joint(theta) + self.transform.log_abs_det_jacobian(u, theta)

    def to_theta(self, u: Tensor) -> Tensor:
        return self.transform(u)


@dataclass(frozen=True)
class Kernel:
    """An MCMC transition: ``init(u) -> state``, ``step(state, generator) -> (state, info)``, and
    ``theta(state)``, the current draw in the target's own (constrained) coordinates."""

    init: Callable[[Tensor], Any]
    step: Callable[[Any, torch.Generator], tuple[Any, Any]]
    theta: Callable[[Any], Tensor]


class MHState(NamedTuple):
    """Chains at u: (C, *batch, D) with log densities (C, *batch), step sizes exp(log_step)
    (C, *batch), proposal shape L: (*batch, D, D), and warm-up moments of the draws."""

    position: Tensor
    log_prob: Tensor
    log_step: Tensor
    scale_tril: Tensor
    iteration: int
    moment_count: int
    moment_sum: Tensor
    moment_outer: Tensor


class MHInfo(NamedTuple):
    """Acceptance probability min(1, p(u')/p(u)) and whether the proposal was accepted, (C, *batch)."""

    accept_prob: Tensor
    accepted: Tensor


def random_walk_mh_kernel(target: Target, *, adapt_steps: int, target_accept: float | None = None) -> Kernel:
    """Random-walk Metropolis-Hastings with a step size and proposal covariance adapted during
    the first ``adapt_steps`` steps (see the module docstring); fixed afterwards."""
    check_count("adapt_steps", adapt_steps, minimum=0)
    space = Unconstrained(target)
    dim = space.dim
    goal = target_accept if target_accept is not None else (0.44 if dim == 1 else 0.234)
    start_log_step = math.log(2.38 / math.sqrt(dim))
    window = (adapt_steps // 4, adapt_steps // 2) if adapt_steps >= 20 else (0, 0)

    def init(u: Tensor) -> MHState:
        batch = u.shape[1:-1]
        eye = torch.eye(dim, dtype=u.dtype, device=u.device)
        return MHState(
            u, space.log_prob(u).detach(), torch.full(u.shape[:-1], start_log_step, dtype=u.dtype, device=u.device),
            eye.expand(*batch, dim, dim), 0, 0, u.new_zeros(*batch, dim), u.new_zeros(*batch, dim, dim),
        )  # fmt: skip

    @torch.no_grad()
    def step(state: MHState, generator: torch.Generator) -> tuple[MHState, MHInfo]:
        u, log_prob, log_step, scale_tril, it = (
            state.position,
            state.log_prob,
            state.log_step,
            state.scale_tril,
            state.iteration,
        )
        eps = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        proposal = u + log_step.exp()[..., None] * (scale_tril @ eps[..., None])[..., 0]
        proposal_log_prob = space.log_prob(proposal)
        log_alpha = (proposal_log_prob - log_prob).nan_to_num(nan=-math.inf).clamp(max=0.0)
        uniform = torch.rand(log_alpha.shape, generator=generator, dtype=u.dtype, device=u.device)
        accepted = uniform.log() < log_alpha
        u = torch.where(accepted[..., None], proposal, u)
        log_prob = torch.where(accepted, proposal_log_prob, log_prob)
        count, total, outer = state.moment_count, state.moment_sum, state.moment_outer
        if it < adapt_steps:
            t = it + 1 if it < window[1] else it - window[1] + 1  # restart after the new L
            log_step = log_step + t**-0.6 * (log_alpha.exp() - goal)
            if window[0] <= it < window[1]:
                count, total, outer = (
                    count + u.shape[0],
                    total + u.sum(0),
                    outer + torch.einsum("c...i,c...j->...ij", u, u),
                )
            if it == window[1] - 1:
                mean = total / count
                cov = outer / count - mean[..., :, None] * mean[..., None, :]
                jitter = 1e-8 * torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1).clamp(min=1e-12)
                cholesky, info = torch.linalg.cholesky_ex(cov + jitter[..., None, None] * torch.eye(dim, dtype=u.dtype))
                scale_tril = torch.where((info == 0)[..., None, None], cholesky, scale_tril)
                log_step = torch.full_like(log_step, start_log_step)
        new = MHState(u, log_prob, log_step, scale_tril, it + 1, count, total, outer)
        return new, MHInfo(log_alpha.exp(), accepted)

    return Kernel(init, step, lambda state: space.to_theta(state.position))


class GibbsState(NamedTuple):
    """Chains at theta: (C, *batch, K), in the target's own coordinates."""

    theta: Tensor


class GibbsInfo(NamedTuple):
    """log p(data, theta) after the sweep, (C, *batch)."""

    log_joint: Tensor


def gibbs_kernel(target: Target) -> Kernel:
    """One systematic-scan Gibbs sweep: each of the ``target.gibbs_blocks`` blocks redrawn in
    turn from its full conditional (:meth:`Target.sample_conditional`)."""
    if target.gibbs_blocks < 1:
        target.sample_conditional(torch.zeros(target.dim), 0, torch.Generator())  # raises the one-line error
    space = biject_to(target.support)

    def init(u: Tensor) -> GibbsState:
        return GibbsState(space(u))

    @torch.no_grad()
    def step(state: GibbsState, generator: torch.Generator) -> tuple[GibbsState, GibbsInfo]:
        theta = state.theta
        for block in range(target.gibbs_blocks):
            theta = target.sample_conditional(theta, block, generator)
        return GibbsState(theta), GibbsInfo(target.log_joint(theta))

    return Kernel(init, step, lambda state: state.theta)


class Diagnostics(NamedTuple):
    """Rank-normalised split R-hat and bulk effective sample size per coordinate, (*batch, K)
    (Vehtari et al. 2021, through ArviZ)."""

    rhat: Tensor
    ess: Tensor


@dataclass(frozen=True)
class Samples:
    """Draws (C chains, N kept draws, *batch, K) in the target's coordinates, with ``seconds[n]``
    the compute time spent (warm-up included, chains run one after another counted in full) up to
    and including draw n of every chain, and the mean acceptance probability after warm-up."""

    method: str
    draws: Tensor
    seconds: Tensor
    accept_rate: float
    divergences: int = 0

    @property
    def total_seconds(self) -> float:
        return float(self.seconds[-1])

    def mean(self, n: int | None = None) -> Tensor:
        """Posterior mean estimated from the first n draws of each chain (all by default)."""
        return self.draws[:, :n].mean((0, 1))

    def sd(self, n: int | None = None) -> Tensor:
        """Posterior standard deviation estimated from the first n draws of each chain."""
        return self.draws[:, :n].flatten(0, 1).std(0)

    def to_inference_data(self) -> Any:
        """An ``arviz.InferenceData`` with one posterior variable ``theta`` of dims
        (chain, draw, *batch, K) and the sampler's settings as attributes."""
        data = _arviz().from_dict(posterior={"theta": self.draws.detach().cpu().numpy()})
        data.posterior.attrs.update(sampler=self.method, accept_rate=self.accept_rate, divergences=self.divergences)
        return data

    def diagnostics(self) -> Diagnostics:
        """Split R-hat and bulk ESS for every coordinate (needs at least 2 chains for R-hat)."""
        az = _arviz()
        data = az.convert_to_dataset(self.draws.detach().cpu().numpy())
        rhat = torch.as_tensor(az.rhat(data)["x"].values)
        ess = torch.as_tensor(az.ess(data)["x"].values)
        return Diagnostics(rhat, ess)


def _arviz() -> Any:
    try:
        import arviz
    except ImportError as err:
        raise AviError("MCMC diagnostics need ArviZ: pip install 'avi[baselines]'") from err
    return arviz


def initial_positions(target: Target, num_chains: int, generator: torch.Generator) -> Tensor:
    """Starting points u ~ Uniform(-2, 2) in unconstrained space: (C, *batch, D), float64."""
    check_count("num_chains", num_chains)
    dim = Unconstrained(target).dim
    return 4 * torch.rand(num_chains, *target.batch_shape, dim, generator=generator, dtype=torch.float64) - 2


def sample_chains(
    kernel: Kernel, initial: Tensor, *, warmup: int, num_samples: int, generator: torch.Generator, method: str
) -> Samples:
    """Run ``warmup`` steps, then keep ``num_samples`` draws of every chain in ``initial`` (C, ..., D)."""
    _check_run(num_samples, warmup)
    start = time.perf_counter()
    state = kernel.init(initial)
    draws, seconds, accept = [], [], []
    for i in range(warmup + num_samples):
        state, info = kernel.step(state, generator)
        if i >= warmup:
            draws.append(kernel.theta(state))
            seconds.append(time.perf_counter() - start)
            if isinstance(info, MHInfo):
                accept.append(info.accept_prob.mean())
    rate = float(torch.stack(accept).mean()) if accept else 1.0
    return Samples(method, torch.stack(draws, 1), torch.tensor(seconds, dtype=torch.float64), rate)


def _check_run(num_samples: int, warmup: int) -> None:
    check_count("num_samples", num_samples)
    check_count("warmup", warmup, minimum=0)


def mh(
    target: Target, *, num_samples: int = 1000, warmup: int = 1000, num_chains: int = 4,
    generator: torch.Generator, target_accept: float | None = None,
) -> Samples:  # fmt: skip
    """Adaptive random-walk Metropolis-Hastings (:func:`random_walk_mh_kernel`), adapted for the
    ``warmup`` steps that are then discarded."""
    _check_run(num_samples, warmup)
    initial = initial_positions(target, num_chains, generator)
    kernel = random_walk_mh_kernel(target, adapt_steps=warmup, target_accept=target_accept)
    return sample_chains(kernel, initial, warmup=warmup, num_samples=num_samples, generator=generator, method="mh")


def gibbs(
    target: Target, *, num_samples: int = 1000, warmup: int = 100, num_chains: int = 4, generator: torch.Generator
) -> Samples:
    """Systematic-scan Gibbs sampling (:func:`gibbs_kernel`), the first ``warmup`` sweeps discarded."""
    _check_run(num_samples, warmup)
    kernel = gibbs_kernel(target)
    initial = initial_positions(target, num_chains, generator)
    return sample_chains(kernel, initial, warmup=warmup, num_samples=num_samples, generator=generator, method="gibbs")


def _check_differentiable(space: Unconstrained, u: Tensor) -> None:
    """Raise a one-line error unless log p(T(u)) has a finite gradient in u."""
    name = space.target.name
    u = u.detach().clone().requires_grad_(True)
    try:
        value = space.log_prob(u).sum()
    except RuntimeError as err:
        raise AviError(f"HMC/NUTS needs a differentiable log-joint; evaluating {name}'s failed: {err}") from err
    if not value.requires_grad:
        raise AviError(
            f"HMC/NUTS needs a differentiable log-joint, but {name}'s does not depend on the latent through autograd"
        )
    (grad,) = torch.autograd.grad(value, [u], allow_unused=True)
    if grad is None or not torch.isfinite(grad).all():
        raise AviError(f"HMC/NUTS needs a differentiable log-joint, but {name}'s gradient is missing or not finite")


def nuts(
    target: Target, *, num_samples: int = 1000, warmup: int = 500, num_chains: int = 4,
    generator: torch.Generator, max_tree_depth: int = 10,
) -> Samples:  # fmt: skip
    """Pyro's NUTS on the unconstrained target, chains run one after another, each seeded from
    ``generator``; step size and diagonal mass matrix adapted during ``warmup``. A batched target
    is sampled as one joint density (the sum of its independent log densities)."""
    _check_run(num_samples, warmup)
    check_count("max_tree_depth", max_tree_depth)
    space = Unconstrained(target)
    initial = initial_positions(target, num_chains, generator)
    _check_differentiable(space, initial[0])
    try:
        from pyro.infer import MCMC, NUTS
    except ImportError as err:
        raise AviError("NUTS needs Pyro: pip install 'avi[baselines]'") from err

    def potential(params: dict[str, Tensor]) -> Tensor:
        return -space.log_prob(params["u"]).sum()

    chains, seconds, accept, divergences = [], [], [], 0
    for c in range(num_chains):
        stamps: list[float] = []  # Pyro calls the hook after every warm-up and kept draw
        kernel = NUTS(
            potential_fn=potential, adapt_step_size=True, adapt_mass_matrix=True, max_tree_depth=max_tree_depth
        )
        run = MCMC(
            kernel, num_samples=num_samples, warmup_steps=warmup, initial_params={"u": initial[c]},
            disable_progbar=True, hook_fn=lambda *_, stamps=stamps: stamps.append(time.perf_counter()),
        )  # fmt: skip
        with forked_rng(generator):
            start = time.perf_counter()
            run.run()
        chains.append(space.to_theta(run.get_samples()["u"]).detach())
        seconds.append(torch.tensor(stamps[warmup:], dtype=torch.float64) - start)
        diagnostics = run.diagnostics()
        accept.append(float(diagnostics["acceptance rate"]["chain 0"]))
        divergences += len(diagnostics["divergences"]["chain 0"])
    # time to have n draws of every chain: the chains' own times (warm-up included), added up
    elapsed = torch.stack(seconds).sum(0)
    return Samples("nuts", torch.stack(chains), elapsed, sum(accept) / num_chains, divergences)
