"""The ELBO with a weighted, optionally clamped, KL term: the objective of the posterior-collapse
remedies (beta-VAE, KL annealing, free bits), as a wrapper of an :class:`~avi.objectives.elbo_objective.ELBO`.

    value(x) = E_q[log p(x|z)] - w * R(q),
    R(q) = KL(q || p(z))                          (no free bits)
    R(q) = sum_k max(lambda, KL_k)                 (free bits, Kingma et al. 2016)

The weight w comes from a :class:`~avi.objectives.schedules.KLSchedule`; the returned
:class:`~avi.objectives.bounds.Terms` keep the true (unweighted) reconstruction and KL, so the
ELBO is still ``reconstruction - kl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.batch import BatchMean, local_mean
from avi.objectives.bounds import Terms, analytic_kl_or_none
from avi.objectives.elbo_objective import ELBO
from avi.objectives.objective import Wrapper

__all__ = ["WeightedKL", "factors", "free_bits_kl"]


def factors(q: Distribution, prior: Distribution) -> tuple[Distribution, Distribution] | None:
    """The per-dimension factors (batch (..., K)) of q and the prior when both are products over
    the K latent dimensions (``Independent`` over one dimension), else None."""
    if isinstance(q, Independent) and isinstance(prior, Independent):
        if q.reinterpreted_batch_ndims == prior.reinterpreted_batch_ndims == 1:
            return q.base_dist, prior.base_dist
    return None


def free_bits_kl(kl_dims: Tensor, free_bits: float, batch_mean: BatchMean = local_mean) -> Tensor:
    """Per-point terms (B,) whose batch mean is sum_k max(lambda, mean_b KL_bk) (Kingma et al. 2016).

    ``kl_dims``: KL per point and latent dimension, (B, K). A dimension whose KL averaged over
    the batch is below ``free_bits`` contributes the constant lambda (and no gradient); the others
    contribute their KL, so value and gradient are those of the batch-level clamp while the
    objective stays per point. The batch is the one ``batch_mean`` averages over (under data
    parallelism the caller passes the global batch's mean).
    """
    if free_bits < 0:
        raise ConfigError(f"free bits must be non-negative, got {free_bits}")
    above = batch_mean(kl_dims) > free_bits
    return kl_dims.where(above, kl_dims.new_tensor(free_bits)).sum(-1)


@dataclass(frozen=True)
class WeightedKL(Wrapper):
    """``Terms(reconstruction - weight * R(q), reconstruction, KL)`` per point, (B,), of the
    ELBO ``base`` (reparameterised: its samples and ``analytic_kl``); see the module.

    Without free bits the terms are ``base``'s, the KL reweighted. With free bits q and the
    prior must factorise over dimensions (a mean-field q): the KL per dimension is exact where
    torch knows it (``analytic_kl``), else estimated from the same S samples as the
    reconstruction, log q_k(z_k) - log p_k(z_k).

    Example:
        >>> WeightedKL(ELBO(), weight=0.5).base
        ELBO(num_samples=1, analytic_kl=True, estimator='reparam', temperature=1.0, straight_through=False)
    """

    weight: float = 1.0
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.base, ELBO):
            raise ConfigError(
                f"beta, KL annealing and free bits weight the ELBO's KL term; objective {self.base.name!r} has none"
            )
        if self.base.estimator != "reparam":
            raise ConfigError(
                "beta, KL annealing and free bits weight the reparameterised ELBO; "
                f"they do not combine with estimator {self.base.estimator!r}"
            )
        if not self.weight >= 0:
            raise ConfigError(f"the KL weight must be non-negative, got {self.weight}")
        if not self.free_bits >= 0:
            raise ConfigError(f"free bits must be non-negative, got {self.free_bits}")

    def __call__(
        self,
        model: LatentVariableModel,
        q: Distribution,
        x: Tensor,
        *,
        state: nn.Module | None = None,
        batch_mean: BatchMean = local_mean,
    ) -> Terms:
        if self.free_bits == 0:
            terms = self.base(model, q, x, state=state, batch_mean=batch_mean)
            return terms._replace(value=terms.reconstruction - self.weight * terms.kl)
        assert isinstance(self.base, ELBO)  # checked in __post_init__
        prior = model.prior()
        pair = factors(q, prior)
        if pair is None:
            raise ConfigError("free bits per dimension need a posterior that factorises over dimensions (mean-field)")
        z = q.rsample((self.base.num_samples,))
        reconstruction = model.likelihood(z).log_prob(x).mean(0)
        kl_dims = analytic_kl_or_none(*pair) if self.base.analytic_kl else None
        if kl_dims is None:
            kl_dims = (pair[0].log_prob(z) - pair[1].log_prob(z)).mean(0)
        clamped = free_bits_kl(kl_dims, self.free_bits, batch_mean)
        return Terms(reconstruction - self.weight * clamped, reconstruction, kl_dims.sum(-1))
