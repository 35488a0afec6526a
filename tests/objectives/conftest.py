"""Fixtures for the objectives' tests."""

from __future__ import annotations

import pytest
from torch import Tensor

from avi.models import LinearGaussian
from tests.closed_forms import make_ppca
from tests.objectives.common import off_posterior_params


@pytest.fixture
def off_params(ppca: LinearGaussian, ppca_x: Tensor) -> Tensor:
    """Full-rank lambda (50, 5) of a q off the posterior of each of the 50 ``ppca_x`` points."""
    return off_posterior_params(ppca, ppca_x)


@pytest.fixture
def trainable_ppca() -> LinearGaussian:
    """The ``ppca`` model (float64) with trainable parameters."""
    return make_ppca().requires_grad_(True)
