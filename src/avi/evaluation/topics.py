"""Comparing fitted topics with known ones: topics are identified only up to a permutation, so
each true topic is paired with a distinct fitted topic by the Hungarian algorithm (Kuhn 1955)
on the total-variation distances TV(p, q) = (1/2) sum_w |p_w - q_w|."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from avi.errors import AviError, ConfigError

__all__ = ["TopicMatch", "match_topics", "topic_distance"]


class TopicMatch(NamedTuple):
    """``order[k]``: the fitted topic paired with true topic k, (K,); ``tv[k]``: their total
    variation distance, (K,); ``mean_tv``: the mean over k (0: identical, 1: disjoint supports)."""

    order: Tensor
    tv: Tensor
    mean_tv: float


def topic_distance(fitted: Tensor, true: Tensor) -> Tensor:
    """Total variation between every pair of rows: fitted (J, V), true (K, V) -> (K, J)."""
    return 0.5 * (true[:, None, :] - fitted[None, :, :]).abs().sum(-1)


def match_topics(fitted: Tensor, true: Tensor) -> TopicMatch:
    """The pairing of true topics (K, V) with distinct fitted topics (J >= K, V) that minimises
    the summed total variation (``scipy.optimize.linear_sum_assignment``). Rows are normalised
    to sum to one first (Dirichlet parameters lambda may be passed as they are)."""
    if fitted.ndim != 2 or true.ndim != 2 or fitted.shape[1] != true.shape[1]:
        raise ConfigError(
            f"topics must be (K, V) arrays over the same words, got {tuple(fitted.shape)} and {tuple(true.shape)}"
        )
    if fitted.shape[0] < true.shape[0]:
        raise ConfigError(f"{fitted.shape[0]} fitted topics cannot be matched with {true.shape[0]} true ones")
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as err:
        raise AviError("matching topics needs scipy: pip install scipy") from err
    fitted = fitted / fitted.sum(-1, keepdim=True)
    true = true / true.sum(-1, keepdim=True)
    cost = topic_distance(fitted.double(), true.double())
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]
    tv = cost[torch.arange(true.shape[0]), order]
    return TopicMatch(order, tv, float(tv.mean()))
