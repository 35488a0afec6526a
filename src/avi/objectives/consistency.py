"""Consistency regularisation of an amortized posterior (Sinha and Dieng 2021).

A semantics-preserving transform t (a small translation or rotation of an image) should leave
the representation unchanged, so the objective is penalised by the divergence between the
encoder's posteriors for x and for t(x):

    value(x) = objective(x) - weight * KL(q(z|x) || q(z|t(x))),    t drawn afresh per call.

(The direction is the one issue 9 asks for; Sinha and Dieng's CR-VAE also adds the bound of
t(x) to the objective, which this penalty leaves out.) Both encoder passes receive gradients.

References:
    Sinha and Dieng, "Consistency Regularization for Variational Auto-Encoders", NeurIPS 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.batch import BatchMean, local_mean
from avi.objectives.bounds import Terms, analytic_kl_or_none
from avi.objectives.objective import Wrapper

__all__ = ["Consistency", "posterior_kl"]


def posterior_kl(q: Distribution, q_t: Distribution, *, num_samples: int = 16) -> Tensor:
    """KL(q || q_t) per point, (B,): exact where torch knows it for the pair (Gaussians), else
    estimated from ``num_samples`` reparameterised samples of q (flows)."""
    kl = analytic_kl_or_none(q, q_t)
    if kl is not None:
        return kl
    z = q.rsample((num_samples,))
    return (q.log_prob(z) - q_t.log_prob(z)).mean(0)


@dataclass(frozen=True)
class Consistency(Wrapper):
    """``base`` minus ``weight`` * KL(q(z|x) || q(z|t(x))) per point, q(z|t(x)) from
    ``posterior`` (an encoder: ``posterior(t(x))``), t = ``transform``. Reconstruction and KL
    terms are the base's, so the logged ELBO stays the ELBO."""

    posterior: nn.Module
    transform: Callable[[Tensor], Tensor]
    weight: float

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ConfigError(f"the consistency weight must be non-negative, got {self.weight}")

    def __call__(
        self,
        model: LatentVariableModel,
        q: Distribution,
        x: Tensor,
        *,
        state: nn.Module | None = None,
        batch_mean: BatchMean = local_mean,
    ) -> Terms:
        terms = self.base(model, q, x, state=state, batch_mean=batch_mean)
        penalty = posterior_kl(q, self.posterior(self.transform(x)))
        return terms._replace(value=terms.value - self.weight * penalty)
