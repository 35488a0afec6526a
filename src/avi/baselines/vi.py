"""Variational inference for a :class:`~avi.baselines.targets.Target` (one set of parameters per
posterior), the counterpart of MCMC in the speed-accuracy comparison.

q is an avi family (:func:`avi.families.make_family`, mean-field or full-rank Gaussian) over the
unconstrained coordinates u of T = ``biject_to(target.support)``, lambda: (*batch_shape, P)
optimised by Adam (learning rate on a cosine decay to 0 over the run) on the reparameterised
estimate of the ELBO (Kucukelbir et al. 2017, ADVI):

    ELBO(lambda) = E_{u ~ q}[log p(data, T(u)) + log |det dT/du| - log q(u)], S draws per step.

The posterior over theta is ``TransformedDistribution(q, T)`` (q itself when the support is R^K).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, TransformedDistribution

from avi.baselines.mcmc import Unconstrained
from avi.baselines.targets import Target, check_count, forked_rng
from avi.families import make_family

__all__ = ["VIResult", "fit_vi", "posterior_moments"]


@dataclass(frozen=True)
class VIResult:
    """The fitted posterior and its trace: ``seconds[t]`` of optimisation (evaluation excluded) by
    record t, when q's posterior mean and sd over theta were ``means[t]`` and ``sds[t]``."""

    method: str
    posterior: Distribution
    seconds: Tensor
    means: Tensor
    sds: Tensor


def posterior_moments(q: Distribution, *, num_samples: int = 4000) -> tuple[Tensor, Tensor]:
    """Mean and sd of q, exact where q has them in closed form, else from ``num_samples`` draws."""
    try:
        return q.mean, q.stddev
    except NotImplementedError:
        draws = q.sample((num_samples,))
        return draws.mean(0), draws.std(0)


def fit_vi(
    target: Target, family: str, *, steps: int = 2000, lr: float = 0.1, num_samples: int = 8,
    generator: torch.Generator, record_every: int = 50,
) -> VIResult:  # fmt: skip
    """Fit q from ``family`` ("mean-field" or "full-rank") to the target by ``steps`` Adam steps;
    q starts at N(0, I) in unconstrained space. Draws come from torch's global RNG seeded from
    ``generator`` (and restored afterwards)."""
    for name, value in (("steps", steps), ("num_samples", num_samples), ("record_every", record_every)):
        check_count(name, value)
    space = Unconstrained(target)
    fam = make_family(family, space.dim)
    params = fam.initial_params(math.prod(target.batch_shape)).to(torch.float64)
    params = params.reshape(*target.batch_shape, fam.param_size).requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=lr)

    def posterior() -> Distribution:
        q = fam(params.detach().clone())  # a copy: Adam updates params in place
        return q if space.identity else TransformedDistribution(q, [space.transform])

    seconds, means, sds, spent = [], [], [], 0.0
    with forked_rng(generator):
        for step in range(steps):
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            q = fam(params)
            u = q.rsample((num_samples,))
            loss = -(space.log_prob(u) - q.log_prob(u)).mean(0).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            spent += time.perf_counter() - start
            if (step + 1) % record_every == 0 or step + 1 == steps:
                with torch.no_grad():
                    mean, sd = posterior_moments(posterior())
                seconds.append(spent)
                means.append(mean)
                sds.append(sd)
    return VIResult(
        f"{family}-vi", posterior(), torch.tensor(seconds, dtype=torch.float64), torch.stack(means), torch.stack(sds)
    )
