"""Convolutional encoders of 28x28 images (``model.network = "conv"``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from avi.nn import check_image_dim, conv_network

__all__ = ["conv_encoder"]


def conv_encoder(data_dim: int, hidden: Sequence[int], param_size: int, activation: str = "relu") -> nn.Module:
    """x (B, 784) -> lambda (B, P): the images through two stride-2 convolutions (28 -> 14 -> 7
    pixels, 32 and 64 channels), then linear layers through the widths ``hidden`` to the
    family's P parameters (:func:`avi.nn.conv_network`). :class:`ConfigError` unless D = 784."""
    check_image_dim(data_dim)
    return conv_network(hidden, param_size, activation)
