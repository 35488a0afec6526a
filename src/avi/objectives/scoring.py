"""The ELBO of given points under a trained posterior, in evaluation mode and without gradients:
what validation during training and the evaluation commands both score."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avi.data.dataset import Dataset
from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.nn import eval_mode
from avi.objectives.bounds import elbo_terms

__all__ = ["elbo_per_point", "fixed_points", "mean_elbo"]


def fixed_points(data: Dataset | Tensor) -> Tensor:
    """The points of ``data`` (N, D); a data set with dynamic binarisation is refused (scores
    need one fixed binarisation)."""
    if isinstance(data, Dataset):
        if data.dynamic:
            raise ConfigError("evaluate on a fixed binarisation: call data.binarized(seed) first")
        return data.x
    return data


@torch.no_grad()
def elbo_per_point(
    model: LatentVariableModel,
    posterior: nn.Module,
    data: Dataset | Tensor,
    *,
    num_samples: int = 1,
    analytic_kl: bool = True,
    batch_size: int = 1000,
) -> tuple[Tensor, Tensor, Tensor]:
    """(ELBO, reconstruction, KL) per point, each (N,); q for point i is ``posterior(x, i)`` in
    evaluation mode (no training-only noise)."""
    x = fixed_points(data)
    out = []
    for start in range(0, x.shape[0], batch_size):
        index = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
        with eval_mode(posterior):
            q = posterior(x[index], index)
        terms = elbo_terms(model, q, x[index], num_samples=num_samples, analytic_kl=analytic_kl)
        out.append(torch.stack([terms.value, terms.reconstruction, terms.kl]))
    value, reconstruction, kl = torch.cat(out, dim=1)
    return value, reconstruction, kl


def mean_elbo(model: LatentVariableModel, posterior: nn.Module, data: Dataset | Tensor) -> float:
    """The mean ELBO per point of a data set."""
    return elbo_per_point(model, posterior, data)[0].mean().item()
