"""Shared fixtures: a seeded global RNG for every test, a seeded generator, and a PPCA model.

Randomness is never drawn from the clock: every test starts from ``torch.manual_seed(0)``, so
a statistical test sees the same draws whatever runs before it.
"""

from __future__ import annotations

import pytest
import torch

from avi.models import LinearGaussian
from tests.closed_forms import make_ppca

# The tensors here are tiny: intra-op threads buy nothing, and when another process holds the
# second core OpenMP spin-waiting made small training loops 20-40x slower on 2-core machines.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed the global RNG (used by ``rsample``) before every test."""
    torch.manual_seed(0)


@pytest.fixture
def generator() -> torch.Generator:
    """An explicitly seeded generator for data draws and batch orders."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def ppca() -> LinearGaussian:
    """PPCA (isotropic noise 0.5), float64, parameters frozen."""
    return make_ppca()


@pytest.fixture
def ppca_x(ppca: LinearGaussian) -> torch.Tensor:
    """50 points drawn from ``ppca``: (50, 5) float64."""
    x, _ = ppca.sample(50, torch.Generator().manual_seed(1))
    return x
