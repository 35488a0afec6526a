"""Variational families for discrete latents, and their Gumbel-softmax (Concrete) relaxation.

- :class:`CategoricalFamily`: N independent categorical variables with C classes each, as
  one-hot vectors: lambda (B, N * C) are logits, q(z; lambda) = prod_n Cat(z_n; softmax(lambda_n)),
  a Distribution with batch shape (B,) and event shape (N, C).
- :class:`BernoulliFamily`: H independent binary units, lambda (B, H) logits,
  q(z; lambda) = prod_h Bernoulli(z_h; sigmoid(lambda_h)), event shape (H,).

Neither has ``rsample``: train them with the score-function estimators or relax them with
:func:`relaxed_sample` (the ``gumbel`` estimator, :func:`avi.objectives.estimators.gumbel_terms`;
for Bernoulli units the binary Concrete of Maddison et al., section 3.3).

References:
    Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
    Maddison, Mnih and Teh, "The Concrete Distribution", ICLR 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    Bernoulli,
    Distribution,
    Independent,
    OneHotCategorical,
    RelaxedBernoulli,
    RelaxedOneHotCategorical,
)

from avi.errors import ConfigError

__all__ = ["DISCRETE_FAMILIES", "BernoulliFamily", "CategoricalFamily", "check_temperature", "relaxed_sample"]

#: the names of the discrete families (config ``inference.family``)
DISCRETE_FAMILIES = ("categorical", "bernoulli")


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


class BernoulliFamily:
    """q(z) = prod_h Bernoulli(z_h; logits lambda_h), z in {0, 1}^H; lambda = logits, P = H."""

    name = "bernoulli"

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = self.param_size = latent_dim

    def __call__(self, params: Tensor) -> Distribution:
        return Independent(Bernoulli(logits=params, validate_args=False), 1, validate_args=False)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """q(z_h = 1) = 1/2 (zero logits) for n points: (n, H); ``scale`` is unused."""
        return torch.zeros(n, self.param_size)


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"the Gumbel-softmax temperature must be positive, got {temperature}")


def relaxed_sample(
    q: Distribution, shape: torch.Size | tuple[int, ...], temperature: float, straight_through: bool
) -> Tensor:
    """z ~ Concrete(q's logits, temperature), shape + q's batch and event shape, differentiable
    in the logits: one-hot vectors relaxed to the simplex for a categorical q, binary units
    relaxed to (0, 1) for a Bernoulli q (z = sigmoid((lambda + log u - log(1 - u)) / temperature)).

    With ``straight_through`` the value is the hard sample (the one-hot argmax, or z > 1/2: a
    sample of q itself) and the gradient the relaxed sample's (Bengio et al. 2013; Jang et al.
    2017, section 2.2).
    """
    check_temperature(temperature)
    base = q.base_dist if isinstance(q, Independent) else q
    if isinstance(base, OneHotCategorical):
        t = torch.tensor(temperature, dtype=base.logits.dtype, device=base.logits.device)
        soft = RelaxedOneHotCategorical(t, logits=base.logits).rsample(shape)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype) if straight_through else soft
    elif isinstance(base, Bernoulli):
        t = torch.tensor(temperature, dtype=base.logits.dtype, device=base.logits.device)
        soft = RelaxedBernoulli(t, logits=base.logits).rsample(shape)
        hard = (soft > 0.5).to(soft.dtype) if straight_through else soft
    else:
        raise ConfigError(f"the gumbel estimator needs a categorical or Bernoulli family, not {type(base).__name__}")
    return hard + soft - soft.detach() if straight_through else soft
