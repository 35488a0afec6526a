"""The inference gap and its two parts (Cremer, Li and Duvenaud 2018).

For a model p and an amortized posterior q(z|x) of family Q:

    log p(x) - L[q]  =  (log p(x) - L[q*])  +  (L[q*] - L[q])
                        approximation gap      amortization gap

where q* is the best member of Q for each point, found by per-datapoint VI started from the
encoder's output and run to convergence with the model fixed. Whether it converged is checked
by halving: on the first :data:`CHECK_POINTS` points q* is found again, from the encoder's
output, with half the steps (a run of its own, with its own decay), and the steps count as
enough when doubling them raised L[q*] by at most :data:`CONVERGED_GAIN` nats per point
(beyond twice the standard error of that gain), measured finely enough to see such a gain
(:func:`q_star_converged`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, cast

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
from avi.seeding import seeded

__all__ = [
    "CHECK_POINTS",
    "CONVERGED_GAIN",
    "GapDecomposition",
    "Progress",
    "check_decomposable",
    "gap_decomposition",
    "q_star_converged",
]

#: points on which q* is found again with half the steps, to check that the steps were enough
CHECK_POINTS = 100
#: nats per point that the second half of the steps may add to L[q*] for q* to count as converged
CONVERGED_GAIN = 0.01
#: told (what is being done, units done, units in all) as the decomposition goes on
Progress = Callable[[str, int, int], None]
#: the seed of the paired ELBO estimates of the convergence check (the generator is restored after)
_CHECK_SEED = 0x6A9


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
    #: L[q*] after ``steps`` less L[q*] after a run of ``steps // 2``, on the first CHECK_POINTS
    #: points, and its standard error (NaN with 0 steps: q* is then the encoder's output)
    refine_gain: float
    refine_gain_stderr: float
    #: :func:`q_star_converged` of refine_gain and its standard error (False with 0 steps)
    q_star_converged: bool


def q_star_converged(gain: float, stderr: float) -> bool:
    """Whether refining q* for twice the steps gained at most :data:`CONVERGED_GAIN` nats per
    point beyond twice the gain's standard error, with that standard error small enough to see
    such a gain (2 se <= CONVERGED_GAIN): a check too noisy to tell says not converged. False
    for a NaN gain (no refinement)."""
    return gain - 2 * stderr <= CONVERGED_GAIN and 2 * stderr <= CONVERGED_GAIN


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
    on_progress: Progress | None = None,
) -> GapDecomposition:
    """Decompose the inference gap of ``posterior`` (amortized, with ``params(x)`` and a
    ``family``: :func:`check_decomposable`) on the points x (N, D).

    L[q] and L[q*] are ELBOs estimated with ``elbo_samples`` samples per point (analytic KL
    where torch has it). q* comes from ``steps`` Adam steps on each point's lambda (gradients
    from ``refine_samples`` samples), started at the encoder's output; for a flow family only
    the context lambda is optimised, the flow's shared weights stay as trained (so too the
    networks of a hierarchical q after its first layer). Its convergence is checked against a
    run of ``steps // 2`` steps on the first :data:`CHECK_POINTS` points (``refine_gain``,
    ``q_star_converged``). log p(x) is exact where the model has
    ``exact_log_marginal``, and otherwise the IWAE bound with k samples drawn from q* (a lower
    bound, so the approximation gap is then a lower bound on the true one too); with
    ``ais_steps`` > 0 it is annealed importance sampling from q* instead
    (:func:`ais_log_likelihood`, k chains), a tighter estimate at the cost of ``ais_steps`` HMC
    steps per chain. ``memory_budget`` (MiB) sizes the chunks of either estimate
    (:func:`log_likelihood`, :func:`ais_log_likelihood`). ``on_progress`` hears of the
    refinement's steps and of the points whose log p(x) is done.
    """
    check_decomposable(posterior, x)
    tell = on_progress or (lambda what, done, total: None)
    family, params = cast(Family, posterior.family), cast(Callable[[Tensor], Tensor], posterior.params)
    with torch.no_grad(), eval_mode(posterior):
        initial = torch.cat([params(x[i : i + batch_size]).detach() for i in range(0, x.shape[0], batch_size)])
    refined, gain, gain_stderr = _refined_and_checked(
        model, family, x, initial, steps=steps, samples=elbo_samples, tell=tell,
        lr=lr, objective=ELBO(num_samples=refine_samples), batch_size=batch_size,
    )  # fmt: skip
    amortized = LocalPosterior(x.shape[0], family, initial=initial)
    optimal = LocalPosterior(x.shape[0], family, initial=refined)
    elbo_a = elbo_per_point(model, amortized, x, num_samples=elbo_samples, batch_size=batch_size)[0]
    elbo_o = elbo_per_point(model, optimal, x, num_samples=elbo_samples, batch_size=batch_size)[0]
    done = [0]

    def points_done(count: int) -> None:
        done[0] += count
        tell("log p(x)", done[0], x.shape[0])

    log_px, method = _log_marginal(
        model, optimal, x, k=k, ais_steps=ais_steps, memory_budget=memory_budget, on_batch=points_done
    )
    ll, lo, la = (v.mean().item() for v in (log_px, elbo_o, elbo_a))
    return GapDecomposition(
        ll, lo, la, ll - lo, lo - la, method, _stderr(log_px - elbo_o), _stderr(elbo_o - elbo_a),
        gain, gain_stderr, steps > 0 and q_star_converged(gain, gain_stderr),
    )  # fmt: skip


def _refined_and_checked(
    model: LatentVariableModel,
    family: Family,
    x: Tensor,
    initial: Tensor,
    *,
    steps: int,
    samples: int,
    tell: Progress,
    batch_size: int,
    **refining: Any,
) -> tuple[Tensor, float, float]:
    """q*'s parameters after ``steps`` steps of :func:`refine_params` from ``initial`` (in chunks
    of ``batch_size`` points, with ``refining``: lr, objective), and the gain in L[q*] of those
    steps over a run of ``steps // 2`` on the first :data:`CHECK_POINTS` points (mean and
    standard error; NaN with no steps), the steps of both told to ``tell``."""
    m = min(CHECK_POINTS, x.shape[0])
    full, half = steps * -(-x.shape[0] // batch_size), steps // 2 * -(-m // batch_size)

    def refine(points: int, count: int, before: int) -> Tensor:
        def told(done: int) -> None:
            tell("refining q*", before + done, full + half)

        return refine_params(
            model, family, x[:points], initial[:points], steps=count, batch_size=batch_size, on_step=told, **refining
        )

    refined = refine(x.shape[0], steps, 0)
    if steps == 0:
        return refined, math.nan, math.nan
    return refined, *_gain(model, family, x[:m], refined[:m], refine(m, steps // 2, full), samples)


def _gain(
    model: LatentVariableModel, family: Family, x: Tensor, longer: Tensor, shorter: Tensor, samples: int
) -> tuple[float, float]:
    """The mean and standard error over x of L[q_longer] - L[q_shorter], both ELBOs estimated
    from the same noise (paired: the difference's noise is that of the two q's difference)."""
    elbos = []
    for params in (longer, shorter):
        with seeded(_CHECK_SEED, x.device):
            q = LocalPosterior(x.shape[0], family, initial=params)
            elbos.append(elbo_per_point(model, q, x, num_samples=samples)[0])
    diff = elbos[0] - elbos[1]
    return diff.mean().item(), _stderr(diff)


def _log_marginal(
    model: LatentVariableModel,
    optimal: Posterior,
    x: Tensor,
    *,
    k: int,
    ais_steps: int,
    memory_budget: float | None,
    on_batch: Callable[[int], None],
) -> tuple[Tensor, str]:
    """log p(x) per point and how: ``exact`` where the model has ``exact_log_marginal``, else AIS
    from q* (``ais_steps`` > 0, k chains) or the IWAE bound with k samples from q* (either way
    ``on_batch`` told the points of each batch done)."""
    exact = getattr(model, "exact_log_marginal", None)
    if exact is not None:
        with torch.no_grad():
            return exact(x), "exact"
    if ais_steps > 0:
        return ais_log_likelihood(
            model, optimal, x, steps=ais_steps, chains=k, memory_budget=memory_budget, on_batch=on_batch
        ).value, "ais"
    return log_likelihood(model, optimal, x, k=k, memory_budget=memory_budget, on_batch=on_batch).value, "iwae"
