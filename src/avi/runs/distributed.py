"""Process-group facts for rank-aware I/O: single-process runs are rank 0 of 1."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["is_main", "rank", "world_size"]


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and prints progress."""
    return rank() == 0
