"""Posterior targets: an unnormalised log density log p(data, theta) over a latent theta.

A :class:`Target` is what the reference methods (exact formulas, MCMC, VI on one set of
parameters) need from a model whose data are fixed: the latent's length ``dim`` (K), its
``support`` (a ``torch.distributions.constraints`` object: MCMC and VI then work in the
unconstrained space of ``biject_to(support)``), and ``log_joint(theta)`` for theta of shape
(..., *batch_shape, K). ``batch_shape`` is () for a model with one global latent (the weights of
a Bayesian regression, the mean of a Normal-Normal model) and (B,) for B independent
posteriors evaluated together, such as p(z_i | x_i) for each point of a
:class:`~avi.models.LatentVariableModel` (:class:`LocalTarget`).

A target with a closed-form posterior returns it from :meth:`Target.exact_posterior`, a torch
``Distribution`` with batch shape ``batch_shape`` and event shape (K,); one whose full
conditionals are conjugate sets ``gibbs_blocks`` and draws each block in
:meth:`Target.sample_conditional`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal, constraints

from avi.errors import AviError, ConfigError
from avi.models.base import LatentVariableModel
from avi.seeding import seeded

__all__ = ["LocalTarget", "Target", "check_count", "forked_rng", "gaussian_conditional_update"]


class Target:
    """An unnormalised posterior over theta in ``support`` (a subset of R^K), data fixed."""

    dim: int
    support: constraints.Constraint = constraints.real_vector
    batch_shape: tuple[int, ...] = ()
    #: number of blocks of a Gibbs sweep (0: the full conditionals are not available)
    gibbs_blocks: int = 0

    @property
    def name(self) -> str:
        return type(self).__name__

    def log_joint(self, theta: Tensor) -> Tensor:
        """log p(data, theta) for theta: (..., *batch_shape, K) -> (..., *batch_shape)."""
        raise NotImplementedError

    def exact_posterior(self) -> Distribution:
        """p(theta | data): batch shape ``batch_shape``, event shape (K,)."""
        raise AviError(f"{self.name} has no closed-form posterior; use MCMC (for example NUTS) as the reference")

    def sample_conditional(self, theta: Tensor, block: int, generator: torch.Generator) -> Tensor:
        """theta with block ``block`` redrawn from its full conditional p(theta_block | rest, data)."""
        raise AviError(f"{self.name} has no conjugate full conditionals, so Gibbs sampling does not apply")


class LocalTarget(Target):
    """The posteriors p(z_i | x_i) of a latent-variable model, one per row of x: batch (B,).

    ``log_joint(z)`` is ``model.log_joint(x, z)`` for z: (..., B, K). PPCA and factor analysis
    have an exact posterior and Gaussian full conditionals (one Gibbs block per coordinate).
    """

    def __init__(self, model: LatentVariableModel, x: Tensor) -> None:
        model.check_data(x)
        self.model, self.x = model, x
        self.dim = model.latent_dim
        self.batch_shape = (x.shape[0],)
        self._exact = getattr(model, "exact_posterior", None)
        self._natural: tuple[Tensor, Tensor] | None = None
        if self._exact is not None:
            self.gibbs_blocks = self.dim

    @property
    def name(self) -> str:
        return f"{type(self.model).__name__} posterior"

    def log_joint(self, theta: Tensor) -> Tensor:
        lead = theta.shape[: theta.ndim - 2]
        flat = theta.reshape(-1, *theta.shape[-2:])
        return self.model.log_joint(self.x, flat).reshape(*lead, self.x.shape[0])

    def exact_posterior(self) -> Distribution:
        if self._exact is None:
            return super().exact_posterior()
        with torch.no_grad():
            return self._exact(self.x)

    def sample_conditional(self, theta: Tensor, block: int, generator: torch.Generator) -> Tensor:
        if self._exact is None:
            return super().sample_conditional(theta, block, generator)
        if self._natural is None:  # precision and shift of the Gaussian posterior, computed once
            posterior = cast(MultivariateNormal, self.exact_posterior())  # PPCA's and factor analysis's
            precision = posterior.precision_matrix
            self._natural = precision, precision @ posterior.loc[..., None]
        return gaussian_conditional_update(theta, block, *self._natural, generator)


def gaussian_conditional_update(
    theta: Tensor, k: int, precision: Tensor, shift: Tensor, generator: torch.Generator
) -> Tensor:
    """Redraw coordinate k of theta from the full conditional of N(Lambda^-1 h, Lambda^-1).

    theta_k | theta_-k ~ N((h_k - sum_{j != k} Lambda_kj theta_j) / Lambda_kk, 1 / Lambda_kk), for
    theta: (..., K), precision Lambda: (..., K, K) and shift h = Lambda m: (..., K, 1) broadcasting
    against theta. This is the conjugate update of one coefficient of a Gaussian linear model.
    """
    row = precision[..., k, :]
    diag = precision[..., k, k]
    rest = (row * theta).sum(-1) - diag * theta[..., k]
    mean = (shift[..., k, 0] - rest) / diag
    noise = torch.randn(mean.shape, generator=generator, dtype=theta.dtype, device=theta.device)
    out = theta.clone()
    out[..., k] = mean + noise / diag.sqrt()
    return out


def check_count(name: str, value: int, minimum: int = 1) -> None:
    """Raise a one-line :class:`ConfigError` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")


@contextmanager
def forked_rng(generator: torch.Generator) -> Iterator[None]:
    """Run code that draws from torch's global RNG (Pyro's NUTS, ``Distribution.rsample``) with a
    seed taken from ``generator``, leaving the caller's global RNG state as it was."""
    with seeded(int(torch.randint(0, 2**62, (), generator=generator))):
        yield
