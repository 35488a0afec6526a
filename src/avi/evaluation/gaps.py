"""The inference gap and its two parts (Cremer, Li and Duvenaud 2018).

For a model p and an amortized posterior q(z|x) of family Q:

    log p(x) - L[q]  =  (log p(x) - L[q*])  +  (L[q*] - L[q])
                        approximation gap      amortization gap

where q* is the best member of Q for each point, found by per-datapoint VI started from the
encoder's output and run to convergence with the model fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from avi.errors import ConfigError
from avi.evaluation.ais import ais_log_likelihood
from avi.evaluation.bounds import elbo_per_point, log_likelihood
from avi.families import Family
from avi.families.posterior import Posterior
from avi.inference.local import LocalPosterior
from avi.inference.refine import refine_params
from avi.models.base import LatentVariableModel
from avi.nn import eval_mode
from avi.objectives.elbo_objective import ELBO

__all__ = ["GapDecomposition", "check_decomposable", "gap_decomposition"]


class GapDecomposition(NamedTuple):
    """Means per data point, in nats, and how log p(x) was obtained (``exact`` or ``iwae``)."""

    log_likelihood: float
    elbo_optimal: float
    elbo_amortized: float
    approximation_gap: float
    amortization_gap: float
    log_likelihood_method: str
    #: standard errors of the two mean gaps (paired over points: Monte Carlo and data variation)
    approximation_gap_stderr: float
    amortization_gap_stderr: float


def _stderr(values: Tensor) -> float:
    return (values.std() / math.sqrt(values.numel())).item() if values.numel() > 1 else 0.0


def check_decomposable(posterior: nn.Module, x: Tensor) -> None:
    """Raise :class:`ConfigError` unless ``posterior`` (on the device of the points x) is
    amortized (q(z|x) a function of x alone, ``posterior.amortized``) with ``params(x)`` and a
    reparameterisable ``family``, as the decomposition refines the encoder's lambda by gradient
    steps."""
    if not (getattr(posterior, "amortized", False) and hasattr(posterior, "params") and hasattr(posterior, "family")):
        raise ConfigError(
            f"the gap decomposition needs an amortized posterior (an encoder) with params(x) and a family, "
            f"not {type(posterior).__name__}"
        )
    family = cast(Family, posterior.family)
    with torch.no_grad():
        reparameterised = family(family.initial_params(1).to(x)).has_rsample
    if not reparameterised:
        raise ConfigError(
            "the gap decomposition refines a continuous q by gradient steps; this posterior has discrete latents"
        )


def gap_decomposition(
    model: LatentVariableModel,
    posterior: Posterior,
    x: Tensor,
    *,
    k: int = 5000,
    steps: int = 1000,
    lr: float = 0.05,
    elbo_samples: int = 100,
    refine_samples: int = 4,
    ais_steps: int = 0,
    batch_size: int = 1000,
    memory_budget: float | None = None,
) -> GapDecomposition:
    """Decompose the inference gap of ``posterior`` (amortized, with ``params(x)`` and a
    ``family``: :func:`check_decomposable`) on the points x (N, D).

    L[q] and L[q*] are ELBOs estimated with ``elbo_samples`` samples per point (analytic KL
    where torch has it). q* comes from ``steps`` Adam steps on each point's lambda (gradients
    from ``refine_samples`` samples), started at the encoder's output; for a flow family only
    the context lambda is optimised, the flow's shared weights stay as trained. log p(x) is
    exact where the model has ``exact_log_marginal``, and otherwise the IWAE bound with k samples
    drawn from q* (a lower bound, so the approximation gap is then a lower bound on the true one
    too); with ``ais_steps`` > 0 it is annealed importance sampling from q* instead
    (:func:`ais_log_likelihood`, k chains), a tighter estimate at the cost of ``ais_steps`` HMC
    steps per chain. ``memory_budget`` (MiB) sizes the chunks of either estimate
    (:func:`log_likelihood`, :func:`ais_log_likelihood`).
    """
    check_decomposable(posterior, x)
    family, params = cast(Family, posterior.family), cast(Callable[[Tensor], Tensor], posterior.params)
    with torch.no_grad(), eval_mode(posterior):
        initial = torch.cat([params(x[i : i + batch_size]).detach() for i in range(0, x.shape[0], batch_size)])
    refined = refine_params(
        model, family, x, initial, steps=steps, lr=lr,
        objective=ELBO(num_samples=refine_samples), batch_size=batch_size,
    )  # fmt: skip
    amortized = LocalPosterior(x.shape[0], family, initial=initial)
    optimal = LocalPosterior(x.shape[0], family, initial=refined)
    elbo_a = elbo_per_point(model, amortized, x, num_samples=elbo_samples, batch_size=batch_size)[0]
    elbo_o = elbo_per_point(model, optimal, x, num_samples=elbo_samples, batch_size=batch_size)[0]
    log_px, method = _log_marginal(model, optimal, x, k=k, ais_steps=ais_steps, memory_budget=memory_budget)
    ll, lo, la = (v.mean().item() for v in (log_px, elbo_o, elbo_a))
    return GapDecomposition(ll, lo, la, ll - lo, lo - la, method, _stderr(log_px - elbo_o), _stderr(elbo_o - elbo_a))


def _log_marginal(
    model: LatentVariableModel, optimal: Posterior, x: Tensor, *, k: int, ais_steps: int, memory_budget: float | None
) -> tuple[Tensor, str]:
    """log p(x) per point and how: ``exact`` where the model has ``exact_log_marginal``, else AIS
    from q* (``ais_steps`` > 0, k chains) or the IWAE bound with k samples from q*."""
    exact = getattr(model, "exact_log_marginal", None)
    if exact is not None:
        with torch.no_grad():
            return exact(x), "exact"
    if ais_steps > 0:
        return ais_log_likelihood(
            model, optimal, x, steps=ais_steps, chains=k, memory_budget=memory_budget
        ).value, "ais"
    return log_likelihood(model, optimal, x, k=k, memory_budget=memory_budget).value, "iwae"
