"""Image transforms for consistency regularisation: exact shifts, rotations that keep the centre."""

from __future__ import annotations

import pytest
import torch

from avi.data.transforms import make_transform, rotate, translate
from avi.errors import ConfigError


def test_translation_moves_pixels_by_whole_shifts_within_two() -> None:
    # one lit pixel per image, away from the border: it moves by (dy, dx) in {-2..2}^2 and stays 1
    x = torch.zeros(200, 784)
    x[:, 14 * 28 + 10] = 1
    y = translate(x)
    assert torch.equal(y.sum(1), torch.ones(200)) and set(y.unique().tolist()) == {0.0, 1.0}
    where = y.argmax(1)
    dy, dx = where // 28 - 14, where % 28 - 10
    assert dy.abs().max() == 2 and dx.abs().max() == 2  # every shift is reached in 200 draws
    assert len(set(zip(dy.tolist(), dx.tolist()))) == 25


def test_translation_matches_a_roll_with_zeros_shifted_in() -> None:
    x = torch.rand(50, 784)
    torch.manual_seed(3)
    y = translate(x).reshape(50, 28, 28)
    torch.manual_seed(3)
    shift = torch.randint(-2, 3, (50, 2))  # (columns, rows), as translate draws them
    for image, moved, (sx, sy) in zip(x.reshape(50, 28, 28), y, shift.tolist()):
        rolled = torch.roll(image, shifts=(sy, sx), dims=(0, 1))
        torch.testing.assert_close(moved[4:-4, 4:-4], rolled[4:-4, 4:-4])
        assert moved[: max(sy, 0)].abs().sum() == 0 and moved[:, : max(sx, 0)].abs().sum() == 0


def test_rotation_keeps_the_centre_and_a_centred_disc() -> None:
    # a disc of radius 8 about the image centre (13.5, 13.5) is unchanged by rotation, up to its
    # rim: bilinear interpolation reads the four pixels within sqrt(2) of the rotated point
    i, j = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    r = ((i - 13.5) ** 2 + (j - 13.5) ** 2).sqrt()
    disc = (r < 8).float().reshape(1, 784).expand(20, -1)
    rotated = rotate(disc).reshape(20, 28, 28)
    inner = r < 8 - 2**0.5
    torch.testing.assert_close(rotated[:, inner], torch.ones(20, int(inner.sum())))
    assert rotated[:, r > 8 + 2**0.5].abs().max() == 0


def test_unknown_transform_and_wrong_shape_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown transform 'shear'"):
        make_transform("shear")
    with pytest.raises(ConfigError, match="28x28"):
        translate(torch.zeros(3, 12))
