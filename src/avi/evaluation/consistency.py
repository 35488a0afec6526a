"""Representation metrics of an amortized posterior: consistency under transforms, linear probe.

- :func:`consistency_kl`: KL(q(z|x) || q(z|t(x))) per point, for a random transform t (Sinha and
  Dieng 2021 report it as the measure of how consistent the representation is; lower is better).
- :func:`linear_probe_accuracy`: the test accuracy of a multinomial logistic regression trained
  on posterior means E_q[z|x] of labelled training points (higher: labels are more linearly
  decodable from the representation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avi.errors import DataError
from avi.nn import eval_mode
from avi.objectives.consistency import posterior_kl

__all__ = ["consistency_kl", "linear_probe_accuracy", "posterior_means"]


@torch.no_grad()
def consistency_kl(
    posterior: nn.Module, x: Tensor, transform: Callable[[Tensor], Tensor], *, batch_size: int = 1000
) -> Tensor:
    """KL(q(z|x) || q(z|t(x))) per point of x (N, D), (N,), with the encoder in evaluation mode;
    t draws its parameters from the global RNG."""
    out = []
    with eval_mode(posterior):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            out.append(posterior_kl(posterior(xb), posterior(transform(xb))))
    return torch.cat(out)


@torch.no_grad()
def posterior_means(posterior: nn.Module, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """E_q[z | x] per point, (N, K): ``q.mean``, or the mean of 100 samples where q has none (flows)."""
    means = []
    with eval_mode(posterior):
        for start in range(0, x.shape[0], batch_size):
            q = posterior(x[start : start + batch_size])
            try:
                means.append(q.mean)
            except NotImplementedError:
                means.append(q.sample((100,)).mean(0))
    return torch.cat(means)


def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    l2: float = 1e-4,
    max_iter: int = 500,
) -> float:
    """Accuracy on the test set of a multinomial logistic regression fitted to the training set.

    Features are standardised with the training mean and standard deviation; the weights
    minimise the mean cross-entropy plus ``l2`` times their squared norm, by L-BFGS (a convex
    problem: the result does not depend on a seed).
    """
    if train_features.shape[0] != train_labels.shape[0] or test_features.shape[0] != test_labels.shape[0]:
        raise DataError("a linear probe needs one label per point")
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-8)
    train = ((train_features - mean) / std).double()
    test = ((test_features - mean) / std).double()
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    weight = torch.zeros(train.shape[1] + 1, classes, dtype=torch.float64, device=train.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], max_iter=max_iter, line_search_fn="strong_wolfe")
    targets = train_labels.long()

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = train @ weight[:-1] + weight[-1]
        loss = F.cross_entropy(logits, targets) + l2 * weight[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (test @ weight[:-1] + weight[-1]).argmax(1)
    return (predicted == test_labels.long()).double().mean().item()
