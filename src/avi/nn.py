"""Small network builders shared by decoders and encoders: MLPs, and convolutional networks for
28x28 images (784 values per point)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from avi.data.transforms import IMAGE_SIZE
from avi.errors import ConfigError

__all__ = [
    "ACTIVATIONS",
    "CONV_CHANNELS",
    "MLP",
    "ConvDecoder",
    "MAXOUT_PIECES",
    "Maxout",
    "WIDE_UNITS",
    "ReducedPrecision",
    "activation_layer",
    "autocast_forward",
    "check_image_dim",
    "conv_features",
    "conv_network",
    "eval_mode",
    "mlp",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus}
#: linear pieces of a maxout unit (``activation = "maxout"``): Rezende and Mohamed's (2015)
#: window of 4
MAXOUT_PIECES = 4


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013): h (..., n * pieces) -> (..., n), each unit the
    largest of its ``pieces`` consecutive inputs, max_j (W_j x + b_j) after a linear layer."""

    def __init__(self, pieces: int = MAXOUT_PIECES) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, h: Tensor) -> Tensor:
        return h.unflatten(-1, (-1, self.pieces)).amax(-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


#: the hidden units built with the linear layer before them widened: their activation's name ->
#: (how many values of that layer make one unit, the layer that reduces them to units).
#: ``maxout``: the largest of :data:`MAXOUT_PIECES`; ``gated``: Dauphin et al.'s (2017) gated
#: linear unit, h = (W x + b) * sigmoid(V x + c), the units of Tomczak and Welling's (2018) VAEs
#: (``nn.GLU`` over the last axis: the first half times the sigmoid of the second).
WIDE_UNITS: dict[str, tuple[int, Callable[[], nn.Module]]] = {
    "maxout": (MAXOUT_PIECES, Maxout),
    "gated": (2, lambda: nn.GLU(-1)),
}


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
    """An ``nn.Sequential`` of linear layers and activations (after :func:`conv_network`'s
    convolutions) whose products can run in bfloat16 (``compute_dtype``, set by
    :func:`avi.precision.set_precision`) while its output keeps the input's dtype."""

    compute_dtype: torch.dtype | None = None

    def forward(self, x: Tensor) -> Tensor:
        return autocast_forward(self, super().forward, x)


def activation_layer(activation: str) -> nn.Module:
    """A new layer of the activation named ``activation`` (:data:`ACTIVATIONS`); :class:`ConfigError` else
    (:data:`WIDE_UNITS` too: their units need the linear layer before them widened, which only
    :func:`mlp` builds)."""
    if activation in WIDE_UNITS:
        raise ConfigError(
            f"{activation} units are built into MLP layers only; convolutional networks and the MADE decoder "
            f"take {', '.join(sorted(ACTIVATIONS))}"
        )
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation]()


def _linear_layers(sizes: Sequence[int], activation: str) -> list[nn.Module]:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with the activation between them, none after
    the last; with one of :data:`WIDE_UNITS`, each hidden layer of n units is a linear layer to
    n * width values and the layer that makes them n units."""
    if activation in WIDE_UNITS:
        width, units = WIDE_UNITS[activation]
    else:
        activation_layer(activation)  # ConfigError for an unknown name
        width, units = 1, ACTIVATIONS[activation]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ConfigError(f"network sizes must be at least two positive integers, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        hidden = i < len(sizes) - 2
        layers.append(nn.Linear(n_in, n_out * width if hidden else n_out))
        if hidden:
            layers.append(units())
    return layers


def mlp(sizes: Sequence[int], activation: str = "relu") -> MLP:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]``, activation between layers, linear output.

    ``mlp([784, 400, 40])`` is Linear(784, 400), ReLU, Linear(400, 40); ``mlp([D, K])`` is affine;
    ``mlp([784, 400, 40], "maxout")`` is Linear(784, 1600), Maxout (400 units), Linear(400, 40);
    ``mlp([784, 300, 40], "gated")`` is Linear(784, 600), GLU (300 units), Linear(300, 40).
    """
    return MLP(*_linear_layers(sizes, activation))


#: channels of the convolutional networks' two layers, at 14x14 and at 7x7 pixels
CONV_CHANNELS = (32, 64)
#: the values of the 7x7 feature maps between the convolutions and the linear layers
_FEATURES = CONV_CHANNELS[1] * (IMAGE_SIZE // 4) ** 2


def check_image_dim(data_dim: int) -> None:
    """:class:`ConfigError` unless ``data_dim`` is that of flattened 28x28 images, 784."""
    if data_dim != IMAGE_SIZE**2:
        raise ConfigError(
            f"the conv network takes {IMAGE_SIZE}x{IMAGE_SIZE} images ({IMAGE_SIZE**2} values per point); "
            f"the data have dimension {data_dim}: use model.network = 'mlp'"
        )


def conv_features(activation: str = "relu") -> list[nn.Module]:
    """x (B, 784) -> features (B, 3136): the images through two 4x4 convolutions of stride 2 and
    padding 1 (28 -> 14 -> 7 pixels, :data:`CONV_CHANNELS` channels), each followed by the
    activation, flattened."""
    c1, c2 = CONV_CHANNELS
    return [
        nn.Unflatten(1, (1, IMAGE_SIZE, IMAGE_SIZE)),
        nn.Conv2d(1, c1, 4, stride=2, padding=1),
        activation_layer(activation),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1),
        activation_layer(activation),
        nn.Flatten(),
    ]


def conv_network(hidden: Sequence[int], out_features: int, activation: str = "relu") -> MLP:
    """x (B, 784) -> (B, out_features): :func:`conv_features`, then linear layers through the
    widths ``hidden``, linear output; its products can run in bfloat16 as an :class:`MLP`'s."""
    return MLP(*conv_features(activation), *_linear_layers([_FEATURES, *hidden, out_features], activation))


class ConvDecoder(nn.Module):
    """z (..., K) -> f(z) (..., 784), the mirror of :func:`conv_network`: linear layers through
    the widths ``hidden`` to 64 maps of 7x7, then two 4x4 transposed convolutions of stride 2
    (7 -> 14 -> 28 pixels, 32 channels, then 1), the activation after every layer but the last,
    plus a bias per pixel (``bias``, (784,): a Gaussian likelihood's mean starts there). Leading
    dimensions of z (samples, points) are flattened for the convolutions and restored."""

    compute_dtype: torch.dtype | None = None

    def __init__(self, latent_dim: int, hidden: Sequence[int] = (256,), activation: str = "relu") -> None:
        super().__init__()
        c1, c2 = CONV_CHANNELS
        side = IMAGE_SIZE // 4
        self.project = nn.Sequential(*_linear_layers([latent_dim, *hidden, _FEATURES], activation))
        self.deconvolve = nn.Sequential(
            activation_layer(activation),
            nn.Unflatten(1, (c2, side, side)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            activation_layer(activation),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1, bias=False),
            nn.Flatten(),
        )
        self.bias = nn.Parameter(torch.zeros(IMAGE_SIZE**2))

    def forward(self, z: Tensor) -> Tensor:
        return autocast_forward(self, self._forward, z)

    def _forward(self, z: Tensor) -> Tensor:
        out = self.deconvolve(self.project(z.reshape(-1, z.shape[-1]))) + self.bias
        return out.reshape(*z.shape[:-1], IMAGE_SIZE**2)


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
