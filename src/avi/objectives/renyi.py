"""The Renyi (variational Renyi, VR) bound of Li and Turner (2016), per data point.

With log-weights log w_i = log p(x, z_i) - log q(z_i), z_i ~ q, i = 1..k, the k-sample VR bound is

    L_alpha,k(x) = 1 / (1 - alpha) * log (1/k) sum_i w_i^(1 - alpha),

the log of the power mean of order 1 - alpha of the weights. alpha -> 1 is the ELBO estimate
mean_i log w_i (the geometric mean), alpha = 0 is the IWAE bound (the arithmetic mean), and on
any fixed draw the bound decreases as alpha increases (power means increase with their order).
In expectation L_alpha,k <= log p(x) for alpha >= 0; for alpha < 0 the limit k -> infinity is an
upper bound, and a finite-k estimate is neither (Li and Turner 2016, section 4.1).

References:
    Li and Turner, "Renyi Divergence Variational Inference", NeurIPS 2016.
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
from avi.objectives.bounds import Terms, check_count, log_weights
from avi.objectives.objective import Stateless

__all__ = ["Renyi", "check_alpha", "log_power_mean", "renyi_bound", "renyi_terms"]


def log_power_mean(log_w: Tensor, order: float, dim: int = 0) -> Tensor:
    """log M_r(w) = (1/r) log mean_i w_i^r from log w, over ``dim``; r = 0 is mean_i log w_i.

    Computed around the mean of log w, as mean + (1/r) log mean exp(r (log w - mean)), so the
    result is continuous in r through 0 (absolute error about eps * log k / |r| near r = 0).
    The gradient with respect to log w_i is softmax(r log w)_i.
    """
    centre = log_w.mean(dim)
    if order == 0:
        return centre
    spread = log_w - centre.unsqueeze(dim)
    return centre + (torch.logsumexp(order * spread, dim) - math.log(log_w.shape[dim])) / order


def check_alpha(alpha: float) -> None:
    """Raise :class:`ConfigError` unless alpha is a finite number (alpha = 1 is the ELBO)."""
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ConfigError(f"the Renyi alpha must be a finite number (1 is the ELBO, 0 the IWAE bound), got {alpha}")


def renyi_terms(model: LatentVariableModel, q: Distribution, x: Tensor, *, alpha: float, k: int) -> Terms:
    """The VR bound L_alpha,k(x) with k reparameterised samples per point, (B,) for x: (B, D).

    alpha = 1 is the limit, mean_i log w_i: value and gradient equal those of the ELBO with k
    samples and no analytic KL (:func:`avi.objectives.elbo_terms` with ``analytic_kl=False``).
    The reconstruction and KL terms are the ELBO's, averaged over the same k samples.
    """
    check_alpha(alpha)
    check_count("k", k)
    log_lik, log_prior, log_q = log_weights(model, q, x, k)
    value = log_power_mean(log_lik + log_prior - log_q, 1 - alpha)
    return Terms(value, log_lik.mean(0), (log_q - log_prior).mean(0))


def renyi_bound(model: LatentVariableModel, q: Distribution, x: Tensor, *, alpha: float, k: int) -> Tensor:
    """The VR bound per data point, (B,); see :func:`renyi_terms`."""
    return renyi_terms(model, q, x, alpha=alpha, k=k).value


@dataclass(frozen=True)
class Renyi(Stateless):
    """The VR bound L_alpha,k of order ``alpha`` with ``k`` samples per point (:func:`renyi_terms`).

    Example:
        >>> Renyi(alpha=0.5, k=5)
        Renyi(alpha=0.5, k=5)
    """

    name: ClassVar[str] = "renyi"

    alpha: float = 0.5
    k: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_alpha(self.alpha)
        check_count("k", self.k)

    def terms(self, model: LatentVariableModel, q: Distribution, x: Tensor) -> Terms:
        return renyi_terms(model, q, x, alpha=self.alpha, k=self.k)
