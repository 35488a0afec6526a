"""Reweighted wake-sleep (Bornschein and Bengio 2015), wake-wake form (Le et al. 2019), as one
surrogate objective for a loop that maximises mean(value) with one backward pass.

With z_i ~ q(z|x), i = 1..k, drawn without a gradient path, log w_i = log p(x, z_i) - log q(z_i)
and normalised weights w~_i = softmax(log w)_i:

- wake-theta (the model): ascend the IWAE bound log (1/k) sum_i w_i; with the z_i fixed its
  model gradient is sum_i w~_i d log p(x, z_i).
- wake-phi (the encoder): ascend sum_i w~_i log q(z_i|x), whose gradient is the
  self-normalised importance estimate of E_p(z|x)[d log q(z|x)] = -d KL(p(z|x) || q(z|x)):
  the encoder minimises the inclusive (forward) KL, which covers the posterior's mass.

The surrogate is IWAE(log p(x, z.detach()) - log q(z.detach()).detach())
+ sum_i w~_i.detach() log q(z_i.detach()) - (the same, detached): its value is the IWAE bound,
its model gradient the wake-theta one, its encoder gradient the wake-phi one. No sleep phase:
Le et al. find wake-phi better. The exact posterior is a fixed point for any k: there the
weights are all equal and E_q[d log q] = 0. No reparameterisation is needed, so q may be any
distribution with ``sample`` and a differentiable ``log_prob``.

References:
    Bornschein and Bengio, "Reweighted Wake-Sleep", ICLR 2015.
    Le, Kosiorek, Siddharth, Teh and Wood, "Revisiting Reweighted Wake-Sleep for Models with
    Stochastic Control Flow", UAI 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from avi.models.base import LatentVariableModel
from avi.objectives.bounds import Terms, check_count
from avi.objectives.objective import Stateless

__all__ = ["RWS", "rws_terms"]


def rws_terms(model: LatentVariableModel, q: Distribution, x: Tensor, *, k: int) -> Terms:
    """The reweighted wake-sleep surrogate with k samples per point, (B,) for x: (B, D).

    ``value`` equals the IWAE bound of the k samples; its gradient is the IWAE gradient for the
    model and the wake-phi (inclusive KL) gradient for q's parameters. The reconstruction and
    KL terms are the ELBO's, averaged over the same samples.
    """
    check_count("k", k)
    with torch.no_grad():
        z = q.sample((k,))
    log_q = q.log_prob(z)  # gradient for q's parameters only: z carries none
    log_lik, log_prior = model.likelihood(z).log_prob(x), model.prior().log_prob(z)
    log_w = log_lik + log_prior - log_q.detach()
    iwae = torch.logsumexp(log_w, 0) - math.log(k)
    wake_phi = (torch.softmax(log_w.detach(), 0) * log_q).sum(0)
    return Terms(iwae + wake_phi - wake_phi.detach(), log_lik.mean(0), (log_q - log_prior).mean(0))


@dataclass(frozen=True)
class RWS(Stateless):
    """Reweighted wake-sleep with ``k`` samples per point (:func:`rws_terms`): value the IWAE
    bound, q trained on the inclusive KL; z is never differentiated, so any family trains.

    Example:
        >>> RWS(k=5).reparameterised
        False
    """

    name: ClassVar[str] = "rws"

    k: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("k", self.k)

    def terms(self, model: LatentVariableModel, q: Distribution, x: Tensor) -> Terms:
        return rws_terms(model, q, x, k=self.k)

    @property
    def reparameterised(self) -> bool:
        return False
