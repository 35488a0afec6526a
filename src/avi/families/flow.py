"""Normalizing-flow families built on zuko: q(z; c) is a conditional flow with context c = lambda.

The flow's own weights are shared by all points; lambda (the context) is what an encoder
outputs (amortized conditional flow) or what a per-datapoint table holds. Autoregressive flows
are used in their inverse direction (IAF, Kingma et al. 2016), so sampling and the density of
the flow's own samples take one pass (``rsample_and_log_prob``).

zuko is imported here only, on first use: importing it turns off torch.distributions argument
validation process-wide (zuko/distributions.py sets ``Distribution._validate_args = False``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError

__all__ = ["FLOW_KINDS", "FlowFamily"]

FLOW_KINDS = ("iaf", "nsf")


class FlowFamily(nn.Module):
    """q(z; lambda) = flow(lambda): ``iaf`` (affine inverse autoregressive flow, Kingma et al.
    2016) or ``nsf`` (rational-quadratic spline autoregressive flow, Durkan et al. 2019), both in
    the inverse (fast sampling) direction, over a N(0, I) base; P = ``context_size``."""

    def __init__(
        self,
        latent_dim: int,
        kind: str = "iaf",
        *,
        context_size: int | None = None,
        transforms: int = 2,
        hidden: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        if kind not in FLOW_KINDS:
            raise ConfigError(f"unknown flow {kind!r}; choose from {list(FLOW_KINDS)}")
        import zuko

        self.name, self.latent_dim = kind, latent_dim
        self.param_size = context_size or 2 * latent_dim
        flow_class = zuko.flows.MAF if kind == "iaf" else zuko.flows.NSF
        flow = flow_class(latent_dim, context=self.param_size, transforms=transforms, hidden_features=tuple(hidden))
        flow.transform = flow.transform.inv
        self.flow = flow

    def forward(self, params: Tensor) -> Distribution:
        return self.flow(params)

    def initial_params(self, n: int, scale: float = 1.0) -> Tensor:
        """Zero contexts for n points: (n, P)."""
        return torch.zeros(n, self.param_size)
