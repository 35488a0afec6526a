"""A VAE whose decoder is autoregressive: p(x|z) = prod_d Bernoulli(x_d | x_<d, z), a MADE
(masked autoencoder, Germain et al. 2015) conditioned on z.

Such a decoder can model the data without z (a MADE alone reaches about 88 nats on binarised
MNIST), so maximising the ELBO tends to collapse q(z|x) onto p(z): the test bed of the collapse
remedies (Bowman et al. 2016; He et al. 2019).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.models.bernoulli import bernoulli_log_prob
from avi.nn import activation_layer, autocast_forward

__all__ = ["MADE", "AutoregressiveBernoulli", "MADEModel"]


class _MaskedLinear(nn.Linear):
    """y = x (W * M)^T + b with a fixed 0/1 mask M (out, in)."""

    mask: Tensor

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Logits (..., D) of x_d given x_<d (natural order) and a context c (..., C) that every
    hidden unit and output sees (Germain et al. 2015, with a conditioning input).

    Hidden unit degrees cycle through 1..D-1; a hidden unit of degree m sees inputs 1..m, and
    output d sees hidden units of degree < d, so logit d depends on x_<d only. Outputs also see
    x_<d directly (a masked linear map: Germain et al.'s direct connections).

    Example:
        >>> made = MADE(4, 2, [8])
        >>> made(torch.zeros(3, 4), torch.zeros(3, 2)).shape
        torch.Size([3, 4])
    """

    #: bfloat16 products under autocast when set (:func:`avi.precision.set_precision`)
    compute_dtype: torch.dtype | None = None

    def __init__(
        self, data_dim: int, context_dim: int, hidden: Sequence[int] = (500,), activation: str = "relu"
    ) -> None:
        super().__init__()
        if data_dim < 2 or not hidden or any(h < 1 for h in hidden):
            raise ConfigError(f"a MADE needs data dimension >= 2 and hidden layers, got {data_dim} and {list(hidden)}")
        activation_layer(activation)  # ConfigError for an unknown name or WIDE_UNITS
        degrees = [torch.arange(1, data_dim + 1)] + [torch.arange(h) % (data_dim - 1) + 1 for h in hidden]
        self.hidden = nn.ModuleList(
            _MaskedLinear((d_out[:, None] >= d_in[None, :]).float()) for d_in, d_out in pairwise(degrees)
        )
        self.output = _MaskedLinear((degrees[0][:, None] > degrees[-1][None, :]).float())
        self.direct = _MaskedLinear(torch.ones(data_dim, data_dim).tril(-1), bias=False)
        self.context_hidden = nn.Linear(context_dim, hidden[0], bias=False)
        self.context_output = nn.Linear(context_dim, data_dim, bias=False)
        self.activation = activation_layer(activation)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: (..., D), context: (..., C), broadcast against each other -> logits (..., D)."""
        return autocast_forward(self, self._logits, x, context)

    def _logits(self, x: Tensor, context: Tensor) -> Tensor:
        h = self.activation(self.hidden[0](x) + self.context_hidden(context))
        for layer in self.hidden[1:]:
            h = self.activation(layer(h))
        return self.output(h) + self.direct(x) + self.context_output(context)


class AutoregressiveBernoulli(Distribution):
    """p(x | c) = prod_d Bernoulli(x_d; sigmoid(MADE(x, c)_d)) over {0, 1}^D: batch shape
    c.shape[:-1], event shape (D,). ``log_prob`` is one network pass; sampling takes D passes."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, made: MADE, context: Tensor, data_dim: int) -> None:
        self.made, self.context = made, context
        super().__init__(context.shape[:-1], Size([data_dim]), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        logits = self.made(value, self.context)
        return bernoulli_log_prob(logits, value)

    @torch.no_grad()
    def sample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> Tensor:
        shape = Size(sample_shape) + self.batch_shape + self.event_shape
        context = self.context.expand(Size(sample_shape) + self.context.shape)
        x = torch.zeros(shape, dtype=self.context.dtype, device=self.context.device)
        for d in range(shape[-1]):
            p = torch.sigmoid(self.made(x, context)[..., d])
            x[..., d] = torch.bernoulli(p, generator=generator)
        return x


class MADEModel(LatentVariableModel):
    """p(z) = N(0, I_K); p(x|z) = :class:`AutoregressiveBernoulli` with a :class:`MADE` of
    ``hidden`` layers conditioned on z. Exact log p(x|z) in one pass."""

    binary_data = True
    prior_loc: Tensor
    prior_scale: Tensor

    def __init__(
        self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (500,), activation: str = "relu"
    ) -> None:
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.decoder = MADE(data_dim, latent_dim, hidden, activation)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def prior(self) -> Distribution:
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1, validate_args=False)

    def likelihood(self, z: Tensor) -> AutoregressiveBernoulli:
        return AutoregressiveBernoulli(self.decoder, z, self.data_dim)

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.likelihood(z).sample(generator=generator)
