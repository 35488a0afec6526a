"""Variational bounds on log p(x), returned per data point.

All functions take a model with ``prior()`` and ``likelihood(z)``, a variational distribution q
with batch shape (B,) and event shape (K,), and data x: (B, D); they return tensors of shape (B,).
Gradients flow through ``q.rsample`` (the reparameterisation estimator).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel

__all__ = [
    "Terms",
    "analytic_kl_or_none",
    "check_count",
    "draw",
    "elbo",
    "elbo_terms",
    "iwae_bound",
    "iwae_terms",
    "log_weights",
    "rsample_with_log_prob",
]


class Terms(NamedTuple):
    """A bound and the two ELBO terms behind it, each (B,).

    ``value`` is what is maximised; ``reconstruction`` estimates E_q[log p(x|z)] and ``kl``
    KL(q || p(z)), so that the ELBO is ``reconstruction - kl``. ``signal``, where an estimator
    has state to update (a score-function baseline), is the detached learning signal log w,
    (S, B), that :meth:`~avi.objectives.objective.Objective.update_state` reads after the step.
    """

    value: Tensor
    reconstruction: Tensor
    kl: Tensor
    signal: Tensor | None = None


def check_count(name: str, n: int) -> None:
    if n < 1:
        raise ConfigError(f"{name} must be a positive integer, got {n}")


def log_weights(
    model: LatentVariableModel, q: Distribution, x: Tensor, num_samples: int, prior: Distribution | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw z_s ~ q by reparameterisation and return (log p(x|z), log p(z), log q(z)), each (S, B).

    Flows that know the density of their own samples (``rsample_and_log_prob``, as zuko's do)
    give it in the same pass; an inverse autoregressive flow's ``log_prob`` of an arbitrary z
    would need one pass per dimension. ``prior``: ``model.prior()`` where the caller has built it
    (a VampPrior's is an encoder pass over its pseudo-inputs).
    """
    z, log_q = rsample_with_log_prob(q, num_samples)
    return model.likelihood(z).log_prob(x), (model.prior() if prior is None else prior).log_prob(z), log_q


def expected_log_likelihood(model: LatentVariableModel, q: Distribution, x: Tensor, num_samples: int = 1) -> Tensor:
    """E_q[log p(x|z)] from S reparameterised samples (plain ones where q has none, allowed only
    without gradients: :func:`draw`), (B,)."""
    if num_samples == 1 and q.has_rsample:  # the common case, without a sample axis
        return model.likelihood(q.rsample()).log_prob(x)
    return model.likelihood(draw(q, num_samples)).log_prob(x).mean(0)


def rsample_with_log_prob(q: Distribution, num_samples: int) -> tuple[Tensor, Tensor]:
    """z_s ~ q by reparameterisation, (S, B, K), and log q(z_s), (S, B), in one pass where q can."""
    if hasattr(q, "rsample_and_log_prob"):
        return q.rsample_and_log_prob((num_samples,))
    z = draw(q, num_samples)
    return z, q.log_prob(z)


def draw(q: Distribution, num_samples: int) -> Tensor:
    """S samples of q, (S, B, ...): reparameterised; for a q without ``rsample`` (a discrete
    family) plain samples, allowed only where no gradient is taken (evaluation under
    ``torch.no_grad``), else :class:`ConfigError`."""
    if q.has_rsample:
        return q.rsample((num_samples,))
    if torch.is_grad_enabled():
        raise ConfigError(
            f"reparameterised estimator asked for a discrete family ({type(q).__name__} has no rsample); "
            "use a score-function estimator or gumbel"
        )
    return q.sample((num_samples,))


def elbo_terms(
    model: LatentVariableModel, q: Distribution, x: Tensor, *, num_samples: int = 1, analytic_kl: bool = False
) -> Terms:
    """ELBO(x) = E_q[log p(x|z)] - KL(q || p(z)), estimated with S reparameterised samples.

    With ``analytic_kl`` the KL is exact (``torch.distributions.kl_divergence``) where torch
    knows it for the pair (q, prior) and only the reconstruction term is estimated (Kingma and
    Welling 2014, estimator B); otherwise (flows, say) both terms use the same samples
    (estimator A).
    """
    check_count("num_samples", num_samples)
    prior = model.prior()  # once: the estimator B test and estimator A both need it
    kl = analytic_kl_or_none(q, prior) if analytic_kl else None
    if kl is not None:
        reconstruction = expected_log_likelihood(model, q, x, num_samples)
    else:
        log_lik, log_prior, log_q = log_weights(model, q, x, num_samples, prior)
        reconstruction = log_lik.mean(0)
        kl = (log_q - log_prior).mean(0)
    return Terms(reconstruction - kl, reconstruction, kl)


def analytic_kl_or_none(q: Distribution, p: Distribution) -> Tensor | None:
    """KL(q || p) in closed form where torch.distributions knows it for these types, else None."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def elbo(
    model: LatentVariableModel, q: Distribution, x: Tensor, *, num_samples: int = 1, analytic_kl: bool = False
) -> Tensor:
    """The ELBO per data point, (B,); see :func:`elbo_terms`."""
    return elbo_terms(model, q, x, num_samples=num_samples, analytic_kl=analytic_kl).value


def iwae_terms(model: LatentVariableModel, q: Distribution, x: Tensor, *, k: int) -> Terms:
    """IWAE bound L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i)], z_i ~ q (Burda et al. 2016).

    L_1 is the ELBO and L_k increases to log p(x) as k grows. The reconstruction and KL terms
    are the single-sample ELBO terms averaged over the same k samples.
    """
    check_count("k", k)
    log_lik, log_prior, log_q = log_weights(model, q, x, k)
    value = torch.logsumexp(log_lik + log_prior - log_q, dim=0) - math.log(k)
    return Terms(value, log_lik.mean(0), (log_q - log_prior).mean(0))


def iwae_bound(model: LatentVariableModel, q: Distribution, x: Tensor, *, k: int) -> Tensor:
    """The IWAE bound per data point, (B,); see :func:`iwae_terms`."""
    return iwae_terms(model, q, x, k=k).value
