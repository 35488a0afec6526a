"""Process-group facts for rank-aware I/O, and joining the group that torchrun describes.

Single-process runs are rank 0 of 1 and never touch ``torch.distributed``. Under ``torchrun``
(one process per rank, on one or several machines) :func:`init_from_env` joins the process
group named by torchrun's environment variables, with the gloo backend on CPU and nccl on CUDA.
"""

from __future__ import annotations

import gc
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from avi.errors import ConfigError

__all__ = [
    "all_reduce_sum",
    "barrier",
    "gather_shards",
    "init_from_env",
    "is_main",
    "rank",
    "shard",
    "shutdown",
    "world_size",
]

#: the variables torchrun sets for every process; all or none must be present
RENDEZVOUS_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: the variable naming the seconds a collective waits for the other ranks before failing
#: (instead of hanging); read when the process group is made
TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_SECONDS = "AVI_DIST_TIMEOUT", 600.0


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and prints progress."""
    return rank() == 0


def init_from_env(device: torch.device, batch_size: int | None = None) -> bool:
    """Join the process group described by torchrun's environment variables, if any.

    Checks before any rendezvous (so that a bad setting fails at once on every rank instead of
    hanging): every variable of :data:`RENDEZVOUS_VARIABLES` is set when one is, and
    ``batch_size`` (when given: training splits each batch over the ranks) is divisible by the
    world size. A CUDA run uses the GPU ``LOCAL_RANK``.
    Returns whether this call created the group (the caller then destroys it); a group that
    already exists (a test's ``torch.multiprocessing`` workers) is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        _check_batch(batch_size, dist.get_world_size())
        return False
    present = [name for name in RENDEZVOUS_VARIABLES if name in os.environ]
    if not present:
        return False
    missing = [name for name in RENDEZVOUS_VARIABLES if name not in os.environ]
    if missing:
        raise ConfigError(
            f"incomplete torch.distributed environment: {', '.join(present)} set but {', '.join(missing)} missing"
            " (start several processes with torchrun)"
        )
    try:
        size, local_rank = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    except ValueError:
        raise ConfigError("WORLD_SIZE and LOCAL_RANK must be integers") from None
    _check_batch(batch_size, size)
    if size == 1:
        return False
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    try:
        timeout = float(os.environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_SECONDS))
    except ValueError:
        value = os.environ[TIMEOUT_VARIABLE]
        raise ConfigError(f"{TIMEOUT_VARIABLE} must be a number of seconds, got {value!r}") from None
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return True


def _check_batch(batch_size: int | None, size: int) -> None:
    if batch_size is not None and batch_size % size:
        raise ConfigError(f"batch size {batch_size} is not divisible by the world size {size}")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; unchanged in a single process."""
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def shard(n: int, block: int = 1) -> range:
    """This process's contiguous share of n items, in whole blocks of ``block`` items (the last
    block may be short): of the m = ceil(n / block) blocks, rank r of R takes blocks m r // R to
    m (r + 1) // R. All n items in a single process."""
    return _share(n, block, rank(), world_size())


def _share(n: int, block: int, here: int, size: int) -> range:
    blocks = -(-n // block)
    return range(min(n, blocks * here // size * block), min(n, blocks * (here + 1) // size * block))


def gather_shards(local: torch.Tensor, n: int, block: int = 1) -> torch.Tensor:
    """Every process's rows for its :func:`shard` of n items (in blocks of ``block``),
    concatenated in item order, on every process; ``local`` itself in a single process."""
    size = world_size()
    if size == 1:
        return local
    lengths = [len(_share(n, block, r, size)) for r in range(size)]
    padded = local.new_zeros((max(lengths), *local.shape[1:]))  # all_gather wants equal shapes
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:length] for part, length in zip(parts, lengths, strict=True)])


def barrier() -> None:
    """Wait for every rank; nothing in a single process."""
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group: a barrier first, so that no rank tears down its gloo or nccl
    connections while a peer is still in a collective (which aborts the peer at exit); then a
    collection of garbage cycles, then ``destroy_process_group``. A dropped
    ``DistributedDataParallel`` wrapper sits in a reference cycle, and its reducer holds the
    process group: left to the collector, the group's last reference (and the join of gloo's
    worker threads) could fall in interpreter finalization, where the process may abort
    ("terminate called without an active exception"). Collected here, the group ends in
    ``destroy_process_group`` while the interpreter is whole. Call it where the training's objects
    are out of scope, as the command line does at its edge. Does nothing in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()
