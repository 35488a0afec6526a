"""Exact inference by enumeration over a small discrete latent space.

p(z | data) = exp(log p(data, z) - log Z) for every z in prod_i {0, ..., c_i - 1}, with
log Z = logsumexp_z log p(data, z), the log evidence. The posterior is a
:class:`CategoricalTable`, a torch ``Distribution`` over integer vectors (event shape (n,)) that
holds the whole probability table, so it can be scored, sampled and marginalised like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints

from avi.errors import AviError

__all__ = ["MAX_CONFIGURATIONS", "CategoricalTable", "enumerate_posterior"]

#: enumeration refuses latent spaces larger than this
MAX_CONFIGURATIONS = 2**22


class CategoricalTable(Distribution):
    """A distribution over z in prod_i {0..c_i-1} given by its table ``probs`` of shape (c_1, ..., c_n).

    ``names`` label the n variables (event coordinates); :meth:`marginal` gives one variable's
    ``Categorical``. ``mean`` and ``variance`` are those of the integer codes.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, probs: Tensor, names: Sequence[str] | None = None, log_normalizer: Tensor | None = None) -> None:
        self.probs = probs
        self.names = tuple(names) if names is not None else tuple(str(i) for i in range(probs.ndim))
        if len(self.names) != probs.ndim:
            raise AviError(f"{len(self.names)} names for a table over {probs.ndim} variables")
        #: log Z, the log evidence, when the table came from normalising a log joint
        self.log_normalizer = log_normalizer
        super().__init__(torch.Size(), torch.Size([probs.ndim]), validate_args=False)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(self.probs.shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.probs.log()[tuple(value.long().unbind(-1))]

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        shape = torch.Size(sample_shape)
        flat = torch.multinomial(self.probs.reshape(-1), max(shape.numel(), 1), replacement=True)
        codes = torch.stack(torch.unravel_index(flat, self.cardinalities), -1)
        return codes.reshape(*shape, self.probs.ndim)

    def marginal(self, variable: str | int) -> Categorical:
        """The marginal of one variable (by name or position) as a ``Categorical``."""
        i = self.names.index(variable) if isinstance(variable, str) else variable
        others = [j for j in range(self.probs.ndim) if j != i]
        return Categorical(probs=self.probs.sum(others) if others else self.probs)

    def marginals(self) -> dict[str, Tensor]:
        """Every variable's marginal probabilities, by name."""
        return {name: self.marginal(i).probs for i, name in enumerate(self.names)}

    @property
    def mean(self) -> Tensor:
        return torch.stack([(p * torch.arange(p.numel(), dtype=p.dtype)).sum() for p in self.marginals().values()])

    @property
    def variance(self) -> Tensor:
        marginals = list(self.marginals().values())
        second = [(p * torch.arange(p.numel(), dtype=p.dtype) ** 2).sum() for p in marginals]
        return torch.stack(second) - self.mean**2


def enumerate_posterior(
    log_joint: Callable[[Tensor], Tensor], cardinalities: Sequence[int], names: Sequence[str] | None = None
) -> CategoricalTable:
    """The exact posterior of a discrete latent z by enumerating every configuration.

    ``log_joint`` maps z: (M, n) integer codes to log p(data, z): (M,); the result's table has
    shape ``cardinalities`` and its ``log_normalizer`` is log p(data).
    """
    size = math.prod(cardinalities)
    if not cardinalities or min(cardinalities) < 1:
        raise AviError(f"enumeration needs at least one variable with at least one state, got {list(cardinalities)}")
    if size > MAX_CONFIGURATIONS:
        raise AviError(
            f"enumeration over {size:,} configurations is too large (limit {MAX_CONFIGURATIONS:,}); "
            "use variable elimination or MCMC"
        )
    grids = torch.meshgrid(*[torch.arange(c) for c in cardinalities], indexing="ij")
    z = torch.stack([g.reshape(-1) for g in grids], -1)
    log_p = log_joint(z)
    log_normalizer = torch.logsumexp(log_p, 0)
    if not torch.isfinite(log_normalizer):
        raise AviError("every configuration has zero probability under the evidence; the posterior is undefined")
    return CategoricalTable((log_p - log_normalizer).exp().reshape(*cardinalities), names, log_normalizer)
