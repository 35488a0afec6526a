"""The chi upper bound CUBO_n of Dieng, Tran, Ranganath, Paisley and Blei (2017), per data point.

For n > 1, CUBO_n(x) = (1/n) log E_q[(p(x, z) / q(z))^n] >= log p(x) (Jensen), with equality
when q is the posterior; with the ELBO it sandwiches log p(x). Its k-sample estimate,

    CUBO_n,k(x) = (1/n) log (1/k) sum_i w_i^n,    log w_i = log p(x, z_i) - log q(z_i),

is the log of the power mean of order n of the weights, computed in log space. It is biased low
(E log <= log E) and converges to CUBO_n as k grows; k = 1 gives the ELBO estimate. The bound
is finite only where q has heavier tails than p(z|x)^(n/(n-1)) allows (for n = 2, a Gaussian q
needs a covariance above half the posterior's), so its estimate is noisy when q is narrow.

Training: the loop maximises ``value``, so :func:`cubo_terms` reports value = -CUBO_n,k and
the encoder's (q's) gradient is that of -CUBO_n,k: the encoder minimises the upper bound (CHIVI).
Minimising an upper bound over the model's parameters would push log p(x) down, so the model's
gradient is instead that of the IWAE bound of the same k samples (a lower bound), the z's and
log q held fixed: the model is fitted by maximum likelihood with q as an importance proposal.

References:
    Dieng, Tran, Ranganath, Paisley and Blei, "Variational Inference via chi Upper Bound
    Minimization", NeurIPS 2017.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.bounds import Terms, check_count, rsample_with_log_prob
from avi.objectives.objective import Stateless
from avi.objectives.renyi import log_power_mean

__all__ = ["CUBO", "check_order", "cubo", "cubo_terms"]


def check_order(n: float) -> None:
    """Raise :class:`ConfigError` unless the CUBO order n is a finite number above 1."""
    if not isinstance(n, (int, float)) or not math.isfinite(n) or n <= 1:
        raise ConfigError(f"the CUBO order n must be a finite number greater than 1, got {n}")


def cubo(model: LatentVariableModel, q: Distribution, x: Tensor, *, n: float = 2.0, k: int) -> Tensor:
    """CUBO_n,k(x), the k-sample estimate of the chi upper bound, (B,) for x: (B, D).

    The gradient is the plain reparameterised gradient of the estimate with respect to
    everything it depends on; for training use :func:`cubo_terms`.
    """
    check_order(n)
    check_count("k", k)
    z, log_q = rsample_with_log_prob(q, k)
    return log_power_mean(model.log_joint(x, z) - log_q, n)


def cubo_terms(model: LatentVariableModel, q: Distribution, x: Tensor, *, n: float = 2.0, k: int) -> Terms:
    """A training surrogate: value -CUBO_n,k(x) (B,); gradient -d CUBO_n,k for q's parameters
    and d IWAE_k (same samples) for the model's; the ELBO terms of the same samples.

    With log w_i = log p(x, z_i) - log q(z_i) and u_i = softmax(n log w)_i (detached), the
    surrogate is -CUBO + sum_i u_i log p(x, z_i.detach()) + IWAE_k(log p(x, z.detach()) - log q
    detached): the second term cancels the model's share of -CUBO's gradient (it has the same
    model gradient and none for q), the third brings the IWAE gradient. The model is evaluated
    twice, once on the samples and once on the detached samples.
    """
    check_order(n)
    check_count("k", k)
    z, log_q = rsample_with_log_prob(q, k)
    prior = model.prior()
    log_lik, log_prior = model.likelihood(z).log_prob(x), prior.log_prob(z)
    log_w = log_lik + log_prior - log_q
    upper = log_power_mean(log_w, n)
    z_fixed = z.detach()
    joint_fixed = model.likelihood(z_fixed).log_prob(x) + prior.log_prob(z_fixed)
    cancel = (torch.softmax(n * log_w.detach(), 0) * joint_fixed).sum(0)
    iwae = torch.logsumexp(joint_fixed - log_q.detach(), 0) - math.log(k)
    surrogate = -upper + cancel + iwae
    value = surrogate - surrogate.detach() - upper.detach()
    return Terms(value, log_lik.mean(0), (log_q - log_prior).mean(0))


@dataclass(frozen=True)
class CUBO(Stateless):
    """The CHIVI training surrogate of order ``order`` = n > 1 with ``k`` samples per point
    (:func:`cubo_terms`): value -CUBO_n,k, q minimising the upper bound, the model on IWAE_k.

    Example:
        >>> CUBO(order=2.0, k=5)
        CUBO(order=2.0, k=5)
    """

    name: ClassVar[str] = "cubo"

    order: float = 2.0
    k: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_order(self.order)
        check_count("k", self.k)

    def terms(self, model: LatentVariableModel, q: Distribution, x: Tensor) -> Terms:
        return cubo_terms(model, q, x, n=self.order, k=self.k)
