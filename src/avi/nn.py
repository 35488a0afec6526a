"""Small network builders shared by decoders and encoders."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from avi.errors import ConfigError

__all__ = ["ACTIVATIONS", "eval_mode", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus}


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]``, activation between layers, linear output.

    ``mlp([784, 400, 40])`` is Linear(784, 400), ReLU, Linear(400, 40); ``mlp([D, K])`` is affine.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ConfigError(f"network sizes must be at least two positive integers, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


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
