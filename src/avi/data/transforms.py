"""Semantics-preserving random transforms of 28 x 28 images, for consistency regularisation.

A transform maps a batch x: (B, 784) of flattened images to t(x) of the same shape, drawing its
parameters per image from the global torch RNG (seeded once per run):

- ``translate``: a shift by an integer number of pixels, uniform in [-2, 2] on each axis,
  zeros shifted in (exact: binary images stay binary).
- ``rotate``: a rotation about the centre by an angle uniform in [-15, 15] degrees, bilinear
  interpolation, zeros outside.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from avi.errors import ConfigError

__all__ = ["IMAGE_SIZE", "TRANSFORMS", "Transform", "check_images", "make_transform"]

IMAGE_SIZE = 28
MAX_SHIFT = 2
MAX_DEGREES = 15.0
TRANSFORMS = ("translate", "rotate")

Transform = Callable[[Tensor], Tensor]


def check_images(shape: tuple[int, ...]) -> None:
    """A ConfigError unless ``shape`` is that of flattened 28x28 images, (N, 784)."""
    if len(shape) != 2 or shape[1] != IMAGE_SIZE * IMAGE_SIZE:
        raise ConfigError(
            f"image transforms need {IMAGE_SIZE}x{IMAGE_SIZE} images ({IMAGE_SIZE**2} values per point), "
            f"got shape {tuple(shape)}"
        )


def _affine(x: Tensor, theta: Tensor, mode: str) -> Tensor:
    """Resample the images x (B, 784) at the points theta (B, 2, 3) maps the output grid to."""
    check_images(tuple(x.shape))
    images = x.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    grid = F.affine_grid(theta.to(x.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False).reshape(x.shape)


def translate(x: Tensor) -> Tensor:
    """Shift each image by (dx, dy) pixels, each uniform on {-2, ..., 2}."""
    shift = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (x.shape[0], 2), device=x.device)
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    # output pixel p reads input p - shift; normalised coordinates span 2 / 28 per pixel
    theta[:, :, 2] = -2 * shift / IMAGE_SIZE
    return _affine(x, theta, "nearest")


def rotate(x: Tensor) -> Tensor:
    """Rotate each image about its centre by an angle uniform in [-15, 15] degrees."""
    angle = (2 * torch.rand(x.shape[0], device=x.device) - 1) * math.radians(MAX_DEGREES)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    return _affine(x, theta, "bilinear")


def make_transform(name: str) -> Transform:
    """The transform called ``name``: ``translate`` or ``rotate``."""
    if name == "translate":
        return translate
    if name == "rotate":
        return rotate
    raise ConfigError(f"unknown transform {name!r}; choose from {list(TRANSFORMS)}")
