"""Hierarchical latents: a deep latent Gaussian model with L stochastic layers (the two-layer
model of Burda, Grosse and Salakhutdinov 2016, section 5),

    p(x, z_1, ..., z_L) = p(z_L) prod_{l < L} p(z_l | z_{l+1}) p(x | z_1),

kept to the one-vector contract of :class:`~avi.models.base.LatentVariableModel`: z is the
concatenation [z_1, ..., z_L] (K = sum of the layers' sizes), and ``layers`` names the sizes
(:func:`latent_layers`: (K,) for a model without them). Its prior is a :class:`GaussianChain`
over that vector, a torch ``Distribution`` whose ``log_prob`` and ``sample`` run through the
model's networks, so every bound that reads log p(z) + log p(x | z) - log q(z | x) works as it is.
KL(q || p) has no closed form: the objectives estimate it from their samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Normal, constraints

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.models.vae import VAEModel
from avi.nn import mlp

__all__ = ["GaussianChain", "HierarchicalVAE", "conditional_normal", "latent_layers"]

#: draws standard-normal noise of a shape, like the ``dtype`` and ``device`` of a reference tensor
Noise = Callable[[torch.Size, Tensor], Tensor]


def latent_layers(obj: object) -> tuple[int, ...]:
    """The sizes of the latent layers of a model (or posterior) z = [z_1, ..., z_L]: its
    ``layers``, else one layer of ``latent_dim`` (a model written to the one-vector contract)."""
    layers = getattr(obj, "layers", None)
    return tuple(int(size) for size in layers) if layers else (int(obj.latent_dim),)  # type: ignore[attr-defined]


def conditional_normal(net: nn.Module, size: int, parent: Tensor) -> Normal:
    """N(mu, diag(softplus(rho)^2)) over a block of ``size`` coordinates, (mu, rho) = net(parent)
    split in two halves: batch (..., size) for parent (..., K_parent)."""
    loc, raw_scale = net(parent).split(size, dim=-1)
    return Normal(loc, F.softplus(raw_scale), validate_args=False)


def _global_noise(shape: torch.Size, like: Tensor) -> Tensor:
    return torch.randn(shape, dtype=like.dtype, device=like.device)


class GaussianChain(Distribution):
    """A chain of Gaussian blocks over z = [z_1, ..., z_L] (layer order): the first block of the
    chain is ``first`` (a ``Normal`` of batch (..., K_first)), each next one
    N(mu(prev), diag(s(prev)^2)) given the block before it (``conditionals[j]``, prev (..., K)
    -> ``Normal``). The chain runs up the layers (z_1 first: the posterior q(z_1 | x)
    q(z_2 | z_1) ...) or, ``top_down``, down them (z_L first: the prior p(z_L) p(z_{L-1} | z_L) ...).

    log q(z) = sum over blocks of log N(block; mu(prev), s(prev)^2); ``rsample`` draws the blocks
    in the chain's order, reparameterised. Batch shape: ``first``'s without its last axis;
    event (K,).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        first: Normal,
        conditionals: Sequence[Callable[[Tensor], Normal]],
        layers: Sequence[int],
        *,
        top_down: bool = False,
    ) -> None:
        if len(conditionals) != len(layers) - 1:
            raise ConfigError(f"a chain of {len(layers)} layers needs {len(layers) - 1} conditionals")
        self.first, self.conditionals, self.layers = first, list(conditionals), tuple(layers)
        self.order = list(reversed(range(len(layers)))) if top_down else list(range(len(layers)))
        if first.batch_shape[-1:] != (self.layers[self.order[0]],):
            raise ConfigError(f"the chain's first block has {first.batch_shape[-1:]} coordinates, not {self.layers}")
        super().__init__(first.batch_shape[:-1], torch.Size([sum(self.layers)]), validate_args=False)

    def _walk(self, value: Tensor | None, sample_shape: torch.Size, noise: Noise) -> tuple[list[Tensor], list[Normal]]:
        """Each block (chain order) and its Gaussian given the block before it: read from
        ``value`` (..., K), or drawn as mu + s * eps, eps from ``noise``, where value is None."""
        parts = None if value is None else value.split(self.layers, dim=-1)
        blocks: list[Tensor] = []
        normals: list[Normal] = []
        for step, layer in enumerate(self.order):
            normal = self.first if step == 0 else self.conditionals[step - 1](blocks[-1])
            if parts is not None:
                block = parts[layer]
            else:
                shape = normal.batch_shape if step else sample_shape + normal.batch_shape
                block = normal.loc + normal.scale * noise(shape, normal.loc)
            blocks.append(block)
            normals.append(normal)
        return blocks, normals

    def _in_layer_order(self, blocks: list[Tensor]) -> Tensor:
        """The chain's blocks as one vector in layer order [z_1, ..., z_L], leading axes broadcast."""
        by_layer = [blocks[self.order.index(layer)] for layer in range(len(self.layers))]
        lead = torch.broadcast_shapes(*(b.shape[:-1] for b in by_layer))
        return torch.cat([b.expand(*lead, b.shape[-1]) for b in by_layer], dim=-1)

    def rsample_and_log_prob(self, sample_shape: torch.Size | Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        """z ~ q by reparameterisation, (*sample_shape, *batch, K), and log q(z), in one pass."""
        blocks, normals = self._walk(None, torch.Size(sample_shape), _global_noise)
        log_q = sum(n.log_prob(b).sum(-1) for n, b in zip(normals, blocks, strict=True))
        return self._in_layer_order(blocks), torch.as_tensor(log_q)

    def rsample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        blocks, _ = self._walk(None, torch.Size(sample_shape), _global_noise)
        return self._in_layer_order(blocks)

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws z (n, *batch, K) with the noise from ``generator``, no gradient."""

        def noise(shape: torch.Size, like: Tensor) -> Tensor:
            return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)

        with torch.no_grad():
            return self._in_layer_order(self._walk(None, torch.Size([n]), noise)[0])

    def coordinate_log_prob(self, value: Tensor) -> Tensor:
        """log density of each coordinate given the block before it in the chain, (..., K) for
        value (..., K), in layer order: the terms whose sum over the last axis is ``log_prob``."""
        blocks, normals = self._walk(value, torch.Size(), _global_noise)
        chain_order = [n.log_prob(b) for n, b in zip(normals, blocks, strict=True)]
        return self._in_layer_order(chain_order)

    def log_prob(self, value: Tensor) -> Tensor:
        blocks, normals = self._walk(value, torch.Size(), _global_noise)
        return torch.as_tensor(sum(n.log_prob(b).sum(-1) for n, b in zip(normals, blocks, strict=True)))

    def conditional_means(self) -> Tensor:
        """Each block's mean given one draw of the blocks before it, (*batch, K), layer order:
        the first block's mean exactly, E[z_l | z_(l-1)] at a drawn z_(l-1) for the others (the
        statistic of Burda et al.'s active units per layer, their ``get_units_variances``)."""
        _, normals = self._walk(None, torch.Size(), _global_noise)
        return self._in_layer_order([n.loc for n in normals])


class HierarchicalVAE(LatentVariableModel):
    """p(z_L) = N(0, I); p(z_l | z_{l+1}) = N(mu_l(z_{l+1}), diag(softplus(rho_l(z_{l+1}))^2)),
    (mu_l, rho_l) an MLP ``K_{l+1} -> layer_hidden... -> 2 K_l``; p(x | z_1) a VAE's decoder on z_1
    (:class:`~avi.models.vae.VAEModel`: an MLP ``K_1 -> hidden... -> D``, Bernoulli or Gaussian,
    with its ``loc`` and ``scale`` start). ``layers`` = (K_1, ..., K_L), z_1 next to x;
    z = [z_1, ..., z_L], K = sum of the layers.

    Burda et al. (2016): layers (100, 50), hidden (200, 200), layer_hidden (100, 100), tanh.
    """

    top_loc: Tensor
    top_scale: Tensor

    def __init__(
        self,
        data_dim: int,
        layers: Sequence[int],
        hidden: Sequence[int] = (400,),
        layer_hidden: Sequence[int] | None = None,
        activation: str = "relu",
        likelihood: str = "bernoulli",
        *,
        loc: Tensor | None = None,
        scale: float | Tensor | None = None,
    ) -> None:
        super().__init__()
        if not layers or any(size < 1 for size in layers):
            raise ConfigError(f"a hierarchical model needs positive layer sizes, got {list(layers)}")
        self.layers = tuple(int(size) for size in layers)
        self.data_dim, self.latent_dim = data_dim, sum(self.layers)
        self.bottom = VAEModel(data_dim, self.layers[0], hidden, activation, likelihood, loc=loc, scale=scale)
        self.binary_data = self.bottom.binary_data
        widths = list(hidden if layer_hidden is None else layer_hidden)
        self.conditionals = nn.ModuleList(
            mlp([upper, *widths, 2 * lower], activation) for lower, upper in pairwise(self.layers)
        )
        self.register_buffer("top_loc", torch.zeros(self.layers[-1]))
        self.register_buffer("top_scale", torch.ones(self.layers[-1]))

    def prior(self) -> GaussianChain:
        """p(z) = p(z_L) prod_l p(z_l | z_{l+1}) over [z_1, ..., z_L]: batch (), event (K,)."""
        below = reversed(range(len(self.conditionals)))  # p(z_l | z_(l+1)) from the top down
        steps = [partial(conditional_normal, self.conditionals[i], self.layers[i]) for i in below]
        top = Normal(self.top_loc, self.top_scale, validate_args=False)
        return GaussianChain(top, steps, self.layers, top_down=True)

    def likelihood(self, z: Tensor) -> Distribution:
        """p(x | z_1), z (..., K) of which z_1 the first K_1 coordinates."""
        return self.bottom.likelihood(z[..., : self.layers[0]])

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.bottom.sample_data(z[..., : self.layers[0]], generator)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n pairs (x, z) from the joint, ancestrally from the top layer down."""
        z = self.prior().draw(n, generator)
        return self.sample_data(z, generator), z
