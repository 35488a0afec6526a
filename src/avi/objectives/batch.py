"""Statistics of the training batch that an objective reads, such as free bits' KL per
dimension and a baseline's mean signal. The caller passes the function that takes them: by
default the mean over this process's batch; under data parallelism the loop passes the mean over
the global batch (:func:`avi.inference.parallel.global_mean`), so that every rank computes what
one process computes on the global batch. An objective never communicates itself."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

__all__ = ["BatchMean", "local_mean"]

#: values (B, ...) -> their mean over the batch, (...), without gradient
BatchMean = Callable[[Tensor], Tensor]


def local_mean(values: Tensor) -> Tensor:
    """The mean over dimension 0 of ``values`` (B, ...), without gradient."""
    return values.detach().mean(0)
