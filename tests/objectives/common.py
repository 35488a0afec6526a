"""Helpers shared by the objectives' tests."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from avi.families import make_family
from avi.models import LinearGaussian

__all__ = ["grads", "off_posterior_params"]


def off_posterior_params(ppca: LinearGaussian, x: Tensor, shift: float = 0.7, stretch: float = 1.6) -> Tensor:
    """Full-rank lambda (B, P) of N(m + shift * sd, stretch^2 S) for the posterior N(m, S) of x."""
    post = ppca.exact_posterior(x)
    q = MultivariateNormal(post.mean + shift * post.stddev, covariance_matrix=stretch**2 * post.covariance_matrix)
    return make_family("full-rank", ppca.latent_dim).params_of(q)


def grads(value: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    """d sum(value) / d inputs, one tensor per input."""
    return list(torch.autograd.grad(value.sum(), inputs, retain_graph=True))
