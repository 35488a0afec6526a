"""The hierarchical posterior of a model with several latent layers (Burda, Grosse and
Salakhutdinov 2016): q(z | x) = q(z_1 | x) prod_{l > 1} q(z_l | z_{l-1}) over the concatenation
z = [z_1, ..., z_L] (:mod:`avi.models.hierarchical`).

lambda is q(z_1 | x)'s mean-field Gaussian parameters (m, softplus^-1(s)), P = 2 K_1, from an
encoder of x or a per-point table; each q(z_l | z_{l-1}) = N(mu_l(z_{l-1}), diag(s_l(z_{l-1})^2))
comes from an MLP that the family holds, shared by all points (as a flow family's weights are):
a posterior that holds the family trains them, and refining lambda per point (``avi gaps``)
leaves them as trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from itertools import pairwise

from torch import Tensor, nn

from avi.errors import ConfigError
from avi.families.gaussian import MeanFieldGaussian
from avi.models.hierarchical import GaussianChain, conditional_normal
from avi.nn import mlp

__all__ = ["HierarchicalFamily"]


class HierarchicalFamily(nn.Module):
    """q(z; lambda) = N(z_1; m, diag(s^2)) prod_{l > 1} q(z_l | z_{l-1}) over ``layers``
    (K_1, ..., K_L); q(z_l | z_{l-1}) from an MLP ``K_{l-1} -> hidden... -> 2 K_l``."""

    name = "hierarchical"

    def __init__(self, layers: Sequence[int], hidden: Sequence[int] = (100, 100), activation: str = "relu") -> None:
        super().__init__()
        if not layers or any(size < 1 for size in layers):
            raise ConfigError(f"a hierarchical family needs positive layer sizes, got {list(layers)}")
        self.layers = tuple(int(size) for size in layers)
        self.latent_dim, self.param_size = sum(self.layers), 2 * self.layers[0]
        self.bottom = MeanFieldGaussian(self.layers[0])
        self.conditionals = nn.ModuleList(
            mlp([lower, *hidden, 2 * upper], activation) for lower, upper in pairwise(self.layers)
        )

    def forward(self, params: Tensor) -> GaussianChain:
        """lambda (B, 2 K_1) -> q(z | x): batch (B,), event (K,)."""
        first = self.bottom(params).base_dist  # type: ignore[attr-defined]
        pairs = zip(self.conditionals, self.layers[1:], strict=True)
        steps = [partial(conditional_normal, net, size) for net, size in pairs]
        return GaussianChain(first, steps, self.layers)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """lambda of q(z_1) = N(0, scale^2 I) for n points: (n, 2 K_1)."""
        return self.bottom.initial_params(n, scale)

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}"
