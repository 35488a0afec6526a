"""Amortized posteriors: an inference network maps x to the parameters of q(z | x)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.distributions import Distribution

from avi.families import Family
from avi.nn import mlp

__all__ = ["AmortizedPosterior", "mlp_encoder"]


def mlp_encoder(data_dim: int, hidden: Sequence[int], param_size: int, activation: str = "relu") -> nn.Module:
    """x (B, D) -> lambda (B, P) through an MLP; ``hidden=()`` gives a linear (affine) encoder."""
    return mlp([data_dim, *hidden, param_size], activation)


class AmortizedPosterior(nn.Module):
    """q(z | x) = family(encoder(x)): one network shared by all data points (amortized VI).

    Inference on new data is one forward pass; ``index`` is accepted for interface parity with
    per-datapoint posteriors and ignored.
    """

    def __init__(self, encoder: nn.Module, family: Family) -> None:
        super().__init__()
        self.encoder, self.family = encoder, family

    def params(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """lambda(x): (B, P)."""
        return self.encoder(x)

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        return self.family(self.encoder(x))
