"""Seeded noise for code that draws from torch's global generators, leaving them as they were.

Sampling in torch.distributions (``rsample``), Pyro's NUTS and avi's estimators draw from the
global generators; a computation whose numbers must not depend on what ran before it (a block
of per-point refinement, a diagnostics estimate in the middle of training, a reference chain)
runs inside :func:`seeded`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["point_seed", "seeded"]

_MASK64 = (1 << 64) - 1


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """The global generators of the CPU and of the CUDA ``device`` (if one is given) seeded by
    ``seed`` inside and their states restored after; other devices' generators are not touched."""
    cuda = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for d in cuda:
            with torch.cuda.device(d):
                torch.cuda.manual_seed(seed)
        yield


def point_seed(seed: int, index: int) -> int:
    """A 64-bit seed for point ``index`` under the evaluation seed ``seed``: the splitmix64
    finaliser of (seed, index) packed in 64 bits, so nearby points get unrelated streams."""
    a = ((seed & 0xFFFFFFFF) << 32 | (index & 0xFFFFFFFF)) & _MASK64
    a = ((a ^ (a >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    a = ((a ^ (a >> 27)) * 0x94D049BB133111EB) & _MASK64
    return a ^ (a >> 31)
