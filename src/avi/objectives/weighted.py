"""The ELBO with a weighted, optionally clamped, KL term: the objective of the posterior-collapse
remedies (beta-VAE, KL annealing, free bits).

    value(x) = E_q[log p(x|z)] - w * R(q),
    R(q) = KL(q || p(z))                          (no free bits)
    R(q) = sum_k max(lambda, KL_k)                 (free bits, Kingma et al. 2016)

The weight w comes from a :class:`~avi.objectives.schedules.KLSchedule`; the returned
:class:`~avi.objectives.bounds.Terms` keep the true (unweighted) reconstruction and KL, so the
ELBO is still ``reconstruction - kl``.
"""

from __future__ import annotations

from torch import Tensor
from torch.distributions import Distribution, Independent

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.batch import batch_mean
from avi.objectives.bounds import Terms, analytic_kl_or_none, elbo_terms

__all__ = ["factors", "free_bits_kl", "weighted_elbo_terms"]


def factors(q: Distribution, prior: Distribution) -> tuple[Distribution, Distribution] | None:
    """The per-dimension factors (batch (..., K)) of q and the prior when both are products over
    the K latent dimensions (``Independent`` over one dimension), else None."""
    if all(isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1 for d in (q, prior)):
        return q.base_dist, prior.base_dist
    return None


def free_bits_kl(kl_dims: Tensor, free_bits: float) -> Tensor:
    """Per-point terms (B,) whose batch mean is sum_k max(lambda, mean_b KL_bk) (Kingma et al. 2016).

    ``kl_dims``: KL per point and latent dimension, (B, K). A dimension whose KL averaged over
    the batch is below ``free_bits`` contributes the constant lambda (and no gradient); the others
    contribute their KL, so value and gradient are those of the batch-level clamp while the
    objective stays per point. Under data parallelism the batch is the global one
    (:func:`~avi.objectives.batch.batch_mean`).
    """
    if free_bits < 0:
        raise ConfigError(f"free bits must be non-negative, got {free_bits}")
    above = batch_mean(kl_dims) > free_bits
    return kl_dims.where(above, kl_dims.new_tensor(free_bits)).sum(-1)


def weighted_elbo_terms(
    model: LatentVariableModel,
    q: Distribution,
    x: Tensor,
    *,
    weight: float = 1.0,
    free_bits: float = 0.0,
    num_samples: int = 1,
    analytic_kl: bool = True,
) -> Terms:
    """``Terms(reconstruction - weight * R(q), reconstruction, KL)`` per point, (B,); see the module.

    Without free bits the terms are :func:`~avi.objectives.bounds.elbo_terms`'. With free bits
    q and the prior must factorise over dimensions (a mean-field q): the KL per dimension is
    exact where torch knows it (``analytic_kl``), else estimated from the same S samples as the
    reconstruction, log q_k(z_k) - log p_k(z_k).
    """
    if weight < 0:
        raise ConfigError(f"the KL weight must be non-negative, got {weight}")
    if free_bits < 0:
        raise ConfigError(f"free bits must be non-negative, got {free_bits}")
    if free_bits == 0:
        terms = elbo_terms(model, q, x, num_samples=num_samples, analytic_kl=analytic_kl)
        return Terms(terms.reconstruction - weight * terms.kl, terms.reconstruction, terms.kl)
    prior = model.prior()
    pair = factors(q, prior)
    if pair is None:
        raise ConfigError("free bits per dimension need a posterior that factorises over dimensions (mean-field)")
    z = q.rsample((num_samples,))
    reconstruction = model.likelihood(z).log_prob(x).mean(0)
    kl_dims = analytic_kl_or_none(*pair) if analytic_kl else None
    if kl_dims is None:
        kl_dims = (pair[0].log_prob(z) - pair[1].log_prob(z)).mean(0)
    return Terms(reconstruction - weight * free_bits_kl(kl_dims, free_bits), reconstruction, kl_dims.sum(-1))
