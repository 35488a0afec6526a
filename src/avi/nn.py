"""Small network builders shared by decoders and encoders."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from avi.errors import ConfigError

__all__ = ["ACTIVATIONS", "MLP", "ReducedPrecision", "autocast_forward", "eval_mode", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus}


@runtime_checkable
class ReducedPrecision(Protocol):
    """A network whose matrix products run under autocast to ``compute_dtype`` when it is set
    (:func:`avi.precision.set_precision`): :class:`MLP`, :class:`avi.models.made.MADE`."""

    compute_dtype: torch.dtype | None


def autocast_forward(module: ReducedPrecision, forward: Callable[..., Tensor], x: Tensor, *args: Tensor) -> Tensor:
    """``forward(x, *args)`` under autocast to ``module.compute_dtype`` (when set), the result
    cast back to x's dtype: reduced-precision matrix products, full-precision output."""
    dtype = module.compute_dtype
    if dtype is None:
        return forward(x, *args)
    with torch.autocast(x.device.type, dtype=dtype):
        out = forward(x, *args)
    return out.to(x.dtype)


class MLP(nn.Sequential):
    """An ``nn.Sequential`` of linear layers and activations whose products can run in bfloat16
    (``compute_dtype``, set by :func:`avi.precision.set_precision`) while its output keeps the
    input's dtype."""

    compute_dtype: torch.dtype | None = None

    def forward(self, x: Tensor) -> Tensor:
        return autocast_forward(self, super().forward, x)


def mlp(sizes: Sequence[int], activation: str = "relu") -> MLP:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]``, activation between layers, linear output.

    ``mlp([784, 400, 40])`` is Linear(784, 400), ReLU, Linear(400, 40); ``mlp([D, K])`` is affine.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ConfigError(f"network sizes must be at least two positive integers, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return MLP(*layers)


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Evaluation mode (``module.eval()``) for the block, every submodule's mode restored after:
    training-only behaviour, such as a denoising encoder's input noise, is off inside."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training
