"""Exact bounds for small discrete-latent models by enumerating every latent configuration.

For a model whose ``latent_states()`` lists all M configurations z_1..z_M (shape (M, *event))
and a q of batch shape (B,) over the same space:

    log p(x)     = logsumexp_m log p(x, z_m),
    ELBO(q; x)   = sum_m q(z_m | x) [log p(x, z_m) - log q(z_m | x)],
    KL(q || p(z | x)) = log p(x) - ELBO(q; x),

all exact (no sampling) and differentiable in q's and the model's parameters, so they also
give the exact mean-field optimum by gradient ascent.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["EnumeratedBounds", "Enumerable", "enumerated_bounds"]


class Enumerable(Protocol):
    """A model whose latent space is finite: ``latent_states()`` lists it, (M, *event), and
    ``log_joint(x, z)`` scores x (B, D) against states z (M, 1, *event): (M, B)."""

    def latent_states(self) -> Tensor: ...

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor: ...


class EnumeratedBounds(NamedTuple):
    """Per-point exact values, each (B,): ``log_marginal`` log p(x), ``elbo`` and ``kl``
    KL(q || p(z|x)) = log p(x) - ELBO."""

    log_marginal: Tensor
    elbo: Tensor
    kl: Tensor


def enumerated_bounds(model: Enumerable, q: Distribution, x: Tensor) -> EnumeratedBounds:
    """log p(x), the exact ELBO of q and KL(q || p(z|x)) for x: (B, D), by summing over
    ``model.latent_states()``."""
    states = model.latent_states().unsqueeze(1)  # (M, 1, *event): broadcast against the batch
    log_joint = model.log_joint(x, states)  # (M, B)
    log_q = q.log_prob(states)  # (M, B)
    weights = log_q.exp()
    # states q excludes contribute 0 log 0 = 0; log q is replaced there (not the product), so
    # neither the value nor the gradient sees -inf, while a NaN elsewhere still propagates
    safe_log_q = torch.where(weights > 0, log_q, torch.zeros_like(log_q))
    elbo = (weights * (log_joint - safe_log_q)).sum(0)
    log_marginal = torch.logsumexp(log_joint, 0)
    return EnumeratedBounds(log_marginal, elbo, log_marginal - elbo)
