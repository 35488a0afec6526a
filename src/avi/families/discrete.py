"""A categorical variational family for discrete latents, and its Gumbel-softmax relaxation.

N independent categorical variables with C classes each, as one-hot vectors: lambda (B, N * C)
are logits, q(z; lambda) = prod_n Cat(z_n; softmax(lambda_n)), a Distribution with batch shape
(B,) and event shape (N, C). It has no ``rsample``: train it with the score-function estimators
or relax it with :func:`relaxed_sample` (the ``gumbel`` estimator,
:func:`avi.objectives.estimators.gumbel_terms`).

References:
    Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
    Maddison, Mnih and Teh, "The Concrete Distribution", ICLR 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    OneHotCategorical,
    RelaxedOneHotCategorical,
)

from avi.errors import ConfigError

__all__ = ["CategoricalFamily", "check_temperature", "relaxed_sample"]


class CategoricalFamily:
    """q(z) = prod_n OneHotCategorical(z_n; logits lambda_n); lambda = logits, P = N * C."""

    name = "categorical"

    def __init__(self, num_vars: int, num_classes: int) -> None:
        self.num_vars, self.num_classes = num_vars, num_classes
        self.latent_dim = num_vars * num_classes
        self.param_size = num_vars * num_classes

    def __call__(self, params: Tensor) -> Distribution:
        logits = params.unflatten(-1, (self.num_vars, self.num_classes))
        return Independent(OneHotCategorical(logits=logits, validate_args=False), 1, validate_args=False)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """Uniform logits (zeros) for n points: (n, P); ``scale`` is unused (no scale to set)."""
        return torch.zeros(n, self.param_size)


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"the Gumbel-softmax temperature must be positive, got {temperature}")


def relaxed_sample(q: Distribution, shape: torch.Size | tuple[int, ...], temperature: float, straight_through: bool) -> Tensor:
    """z ~ Concrete(q's logits, temperature), shape + (B, N, C), differentiable in the logits.

    With ``straight_through`` the value is the one-hot argmax (a sample of q itself) and the
    gradient the relaxed sample's (Bengio et al. 2013; Jang et al. 2017, section 2.2).
    """
    check_temperature(temperature)
    base = q.base_dist if isinstance(q, Independent) else q
    if not isinstance(base, OneHotCategorical):
        raise ConfigError(f"the gumbel estimator needs a categorical family, not {type(base).__name__}")
    soft = RelaxedOneHotCategorical(torch.tensor(temperature, dtype=base.logits.dtype), logits=base.logits).rsample(shape)
    if not straight_through:
        return soft
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()
