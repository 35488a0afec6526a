"""Fixtures for the reference-method tests: one thread, a seeded global RNG and generator."""

from __future__ import annotations

import pytest
import torch

# Tiny tensors: a second thread buys nothing and spin-waits when the other core is busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global RNG state, whatever ran before it."""
    torch.manual_seed(0)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
