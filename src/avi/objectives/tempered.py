"""The annealed free energy of Rezende and Mohamed (2015, Section 6), as a wrapper of an ELBO:

    value(x) = E_q[beta * log p(x, z) - log q(z|x)] = beta * ELBO(x) + (1 - beta) * H[q(z|x)],

with beta in [0, 1] the inverse temperature (beta = 1: the ELBO). q is fitted to the tempered
posterior, proportional to p(x, z)^beta, which is broad for a small beta. A KL warm-up weights
log q - log p(z) instead, so early on it lets q shrink towards a point; tempering keeps q broad.
The returned :class:`~avi.objectives.bounds.Terms` keep the true reconstruction and KL, so the
ELBO is still ``reconstruction - kl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.batch import BatchMean, local_mean
from avi.objectives.bounds import Terms, analytic_kl_or_none, expected_log_likelihood, log_weights
from avi.objectives.elbo_objective import ELBO
from avi.objectives.objective import Wrapper

__all__ = ["Tempered"]


def _entropy_or_none(q: Distribution) -> Tensor | None:
    """H[q] in closed form where torch.distributions knows it, else None."""
    try:
        return q.entropy()
    except NotImplementedError:
        return None


@dataclass(frozen=True)
class Tempered(Wrapper):
    """``Terms(beta * ELBO + (1 - beta) * H[q], reconstruction, KL)`` per point, (B,), of the
    reparameterised ELBO ``base`` at ``inverse_temperature`` beta; see the module.

    Where ``base.analytic_kl`` and torch knows both KL(q || p(z)) and H[q] in closed form (a
    Gaussian q and prior), only the reconstruction is estimated; otherwise (a flow, say) every
    term comes from the same S samples: mean_s [beta (log p(x|z_s) + log p(z_s)) - log q(z_s)].

    Example:
        >>> Tempered(ELBO(), inverse_temperature=0.01).inverse_temperature
        0.01
    """

    inverse_temperature: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.base, ELBO):
            raise ConfigError(f"tempering (remedies.temper) anneals the ELBO, not objective {self.base.name!r}")
        if self.base.estimator != "reparam":
            raise ConfigError(
                f"tempering (remedies.temper) anneals the reparameterised ELBO, not estimator {self.base.estimator!r}"
            )
        if not 0 <= self.inverse_temperature <= 1:
            raise ConfigError(f"the inverse temperature must be in [0, 1], got {self.inverse_temperature}")

    def __call__(
        self,
        model: LatentVariableModel,
        q: Distribution,
        x: Tensor,
        *,
        state: nn.Module | None = None,
        batch_mean: BatchMean = local_mean,
    ) -> Terms:
        assert isinstance(self.base, ELBO)  # checked in __post_init__
        beta, samples, prior = self.inverse_temperature, self.base.num_samples, model.prior()
        kl = analytic_kl_or_none(q, prior) if self.base.analytic_kl else None
        entropy = None if kl is None else _entropy_or_none(q)
        if kl is not None and entropy is not None:
            reconstruction = expected_log_likelihood(model, q, x, samples)
            return Terms(beta * (reconstruction - kl) + (1 - beta) * entropy, reconstruction, kl)
        log_lik, log_prior, log_q = log_weights(model, q, x, samples, prior)
        value = (beta * (log_lik + log_prior) - log_q).mean(0)
        return Terms(value, log_lik.mean(0), (log_q - log_prior).mean(0))
