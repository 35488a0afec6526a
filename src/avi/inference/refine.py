"""Per-datapoint optimisation of lambda for given points with the model fixed."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

from avi.errors import ConfigError
from avi.families import Family
from avi.models.base import LatentVariableModel
from avi.objectives.elbo_objective import ELBO
from avi.objectives.select import Objective
from avi.seeding import point_seed, seeded

__all__ = ["refine_params"]

#: mixed into the seeds of refinement chunks, so that their noise differs from the importance
#: sampling stream of the chunk's first point under the same seed
REFINE_STREAM = 0x9E3779B97F4A7C15


def refine_params(
    model: LatentVariableModel,
    family: Family,
    x: Tensor,
    initial: Tensor,
    *,
    steps: int,
    lr: float = 0.1,
    objective: Objective | None = None,
    batch_size: int = 10_000,
    seed: int | None = None,
    first_index: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """Maximise sum_i objective(model, family(lambda_i), x_i) over lambda: (N, P), model fixed.

    All points of a chunk of ``batch_size`` are optimised together as one tensor by Adam, whose
    learning rate follows a cosine decay to 0 over ``steps`` so that the stochastic iterates
    settle at the optimum. Gradients are taken with respect to lambda only.

    The noise comes from the global generator; with ``seed``, the chunk that starts at point j
    draws it seeded by (``seed``, ``first_index`` + j) and the generator is restored after, so
    refining a range of points in pieces of whole chunks (``first_index`` their offset: on
    several processes) gives the numbers of refining it at once. ``on_step`` is told the steps
    taken so far, over all chunks (of ``steps`` x the number of chunks), after each step.
    """
    if steps < 0:
        raise ConfigError(f"steps must be non-negative, got {steps}")
    objective = objective or ELBO()
    out = initial.detach().clone()
    for start in range(0, x.shape[0], batch_size):
        params = out[start : start + batch_size].clone().requires_grad_(True)
        x_chunk = x[start : start + batch_size]
        optimizer = torch.optim.Adam([params], lr=lr)
        noise = (
            nullcontext() if seed is None else seeded(point_seed(seed, first_index + start) ^ REFINE_STREAM, x.device)
        )
        with noise:
            for step in range(steps):
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                loss = -objective(model, family(params), x_chunk).value.sum()
                (grad,) = torch.autograd.grad(loss, [params])
                params.grad = grad
                optimizer.step()
                if on_step is not None:
                    on_step(start // batch_size * steps + step + 1)
        out[start : start + batch_size] = params.detach()
    return out
