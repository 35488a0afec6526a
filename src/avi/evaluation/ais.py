"""Annealed importance sampling of log p(x) (Neal 2001), with HMC transitions as used for
decoder-based models by Wu, Burda, Salakhutdinov and Grosse (2017).

Chains start from q(z|x) and follow the geometric path pi_t(z) = q(z|x)^(1 - b_t) p(x, z)^(b_t),
b_0 = 0 < b_1 < ... < b_T = 1. The log weight of a chain is

    log w = sum_t (b_t - b_{t-1}) [log p(x, z_{t-1}) - log q(z_{t-1} | x)],

where z_t comes from an HMC step that leaves pi_t invariant. E[w] = p(x), so log of the mean
weight over chains is a stochastic lower bound on log p(x) that tightens as T grows; with T = 1
(no transition) it is the IWAE bound with as many samples as chains.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from avi.errors import ConfigError
from avi.evaluation.bounds import LogLikelihood
from avi.evaluation.importance import row_bytes
from avi.models.base import LatentVariableModel
from avi.nn import eval_mode

__all__ = ["GRAD_ROWS", "TARGET_ACCEPTANCE", "ais_log_likelihood"]

#: the acceptance rate each chain's HMC step size adapts towards (Wu et al. 2017): x STEP_GROWTH
#: after an accepted move, x STEP_SHRINK after a rejected one, so that the log step size drifts by
#: a log STEP_GROWTH + (1 - a) log STEP_SHRINK, zero at acceptance rate a = TARGET_ACCEPTANCE
TARGET_ACCEPTANCE = 0.65
STEP_GROWTH = 1.02
STEP_SHRINK = STEP_GROWTH ** (-TARGET_ACCEPTANCE / (1 - TARGET_ACCEPTANCE))

#: working memory of one AIS chain in units of an importance-sampling row: the forward
#: activations kept for the gradient, their gradients, and the leapfrog state
GRAD_ROWS = 3


def _budget_batch(model: LatentVariableModel, chains: int, memory_budget: float, dtype: torch.dtype) -> int:
    """Points per batch whose ``chains`` chains fit ``memory_budget`` MiB."""
    if not memory_budget > 0:
        raise ConfigError(f"the memory budget must be a positive number of MiB, got {memory_budget}")
    per_point = GRAD_ROWS * row_bytes(model, dtype) * chains
    if per_point > memory_budget * 2**20:
        raise ConfigError(
            f"a memory budget of {memory_budget:g} MiB is below one point's {chains} AIS chains "
            f"({per_point / 2**20:.2f} MiB)"
        )
    return int(memory_budget * 2**20) // per_point


def _log_densities(
    model: LatentVariableModel, q: torch.distributions.Distribution, x: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    """(log p(x, z), log q(z | x)) for z: (S, B, K), each (S, B)."""
    return model.prior().log_prob(z) + model.likelihood(z).log_prob(x), q.log_prob(z)


def _grad_log_target(
    model: LatentVariableModel, q: torch.distributions.Distribution, x: Tensor, z: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """log pi_beta(z) (S, B) and its gradient with respect to z (S, B, K)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_joint, log_q = _log_densities(model, q, x, z)
        log_target = log_q + beta * (log_joint - log_q)
        (grad,) = torch.autograd.grad(log_target.sum(), [z])
    return log_target.detach(), grad


def _hmc_step(
    model: LatentVariableModel,
    q: torch.distributions.Distribution,
    x: Tensor,
    z: Tensor,
    beta: float,
    step_size: Tensor,
    leapfrog_steps: int,
) -> tuple[Tensor, Tensor]:
    """One HMC transition leaving pi_beta invariant; returns (z, accepted (S, B) booleans)."""
    momentum = torch.randn_like(z)
    log_target, grad = _grad_log_target(model, q, x, z, beta)
    start_energy = -log_target + 0.5 * momentum.pow(2).sum(-1)
    z_new, p = z, momentum + 0.5 * step_size * grad
    for i in range(leapfrog_steps):
        z_new = z_new + step_size * p
        new_log_target, grad = _grad_log_target(model, q, x, z_new, beta)
        p = p + (step_size if i < leapfrog_steps - 1 else 0.5 * step_size) * grad
    end_energy = -new_log_target + 0.5 * p.pow(2).sum(-1)
    accept = torch.log(torch.rand_like(start_energy)) < (start_energy - end_energy).nan_to_num(nan=-math.inf)
    return torch.where(accept[..., None], z_new, z), accept


@torch.no_grad()
def ais_log_likelihood(
    model: LatentVariableModel,
    posterior: nn.Module,
    x: Tensor,
    *,
    steps: int = 100,
    chains: int = 16,
    leapfrog_steps: int = 5,
    step_size: float = 0.05,
    batch_size: int | None = None,
    memory_budget: float | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> LogLikelihood:
    """AIS estimates of log p(x) for x: (N, D), ``chains`` chains per point, ``steps`` annealing
    increments on a linear schedule of b, with one HMC step of ``leapfrog_steps`` leapfrog
    steps targeting each intermediate distribution (T - 1 transitions in all). Each chain's step
    size adapts towards Wu et al.'s acceptance rate of 0.65 (:data:`TARGET_ACCEPTANCE`: up 2% on
    an accepted move, down 3.6% on a rejected one). q is the posterior in evaluation mode. The
    standard error is the delta-method one of the mean weight, as for :func:`log_likelihood`.

    Points are processed ``batch_size`` at a time (default 100); with ``memory_budget`` (MiB)
    and no batch size, as many as fit: a chain costs :data:`GRAD_ROWS` times the
    working memory of an importance-sampling row (the gradient keeps the decoder's activations).
    ``on_batch`` is told the number of points of each batch done.
    """
    if steps < 1 or chains < 1 or leapfrog_steps < 1 or step_size <= 0:
        raise ConfigError(
            f"AIS needs steps >= 1, chains >= 1, leapfrog_steps >= 1 and step_size > 0; "
            f"got {steps}, {chains}, {leapfrog_steps}, {step_size}"
        )
    if batch_size is None:
        batch_size = 100 if memory_budget is None else _budget_batch(model, chains, memory_budget, x.dtype)
    elif batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    betas = torch.linspace(0, 1, steps + 1).tolist()
    values, stderrs = [], []
    for start in range(0, x.shape[0], batch_size):
        index = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
        xb = x[index]
        with eval_mode(posterior):
            q = posterior(xb, index)
        z = q.sample((chains,))
        log_w = torch.zeros(z.shape[:-1], dtype=x.dtype, device=x.device)
        eps = torch.full((*z.shape[:-1], 1), step_size, dtype=x.dtype, device=x.device)
        for t, (previous, beta) in enumerate(zip(betas[:-1], betas[1:], strict=True)):
            log_joint, log_q = _log_densities(model, q, xb, z)
            log_w += (beta - previous) * (log_joint - log_q)
            if t < steps - 1:  # the final target needs no transition: the weight is complete
                z, accepted = _hmc_step(model, q, xb, z, beta, eps, leapfrog_steps)
                eps = eps * torch.where(accepted, STEP_GROWTH, STEP_SHRINK)[..., None]
        lse = torch.logsumexp(log_w, 0)
        values.append(lse - math.log(chains))
        relative_var = (chains * torch.exp(torch.logsumexp(2 * log_w, 0) - 2 * lse) - 1).clamp_min(0)
        stderrs.append((relative_var / chains).sqrt())
        if on_batch is not None:
            on_batch(index.numel())
    return LogLikelihood(torch.cat(values), torch.cat(stderrs), chains)
