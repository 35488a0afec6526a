"""Posterior-collapse diagnostics: KL per latent dimension, active units, mutual information.

Posterior collapse is q(z|x) = p(z) for every x: the KL term vanishes and the latents carry no
information about x. Three views of it, all computed from the posterior over a data set:

- KL(q(z_k|x) || p(z_k)) per dimension k, averaged over points;
- active units (Burda et al. 2016): dimensions whose posterior mean moves with x, counted per
  latent layer for a model with several (their "16+5": :func:`active_units_by_layer`);
- I(x; z) under the encoder's joint p_data(x) q(z|x) (Hoffman and Johnson 2016), estimated as
  He, Spokoyny, Neubig and Berg-Kirkpatrick (2019) do (their ``calc_mi``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.models.hierarchical import latent_layers
from avi.nn import eval_mode
from avi.objectives.bounds import analytic_kl_or_none

__all__ = [
    "CollapseDiagnostics",
    "active_units",
    "active_units_by_layer",
    "batch_mutual_information",
    "collapse_diagnostics",
    "dimension_kl",
    "mutual_information",
    "posterior_mean_variance",
]


class CollapseDiagnostics(NamedTuple):
    """What :func:`collapse_diagnostics` returns for a data set.

    ``kl_per_dim`` (K,): mean over points of KL(q(z_k|x) || p(z_k)); ``mean_variance`` (K,):
    Cov_x(E_q[z_k|x]) (the trace over a categorical latent's classes); ``active_units``: how
    many of those exceed the threshold; ``mutual_information``: the estimate of I(x; z) in nats;
    ``active_units_per_layer``: the active units of each latent layer, z_1 first (one count for
    a model with one latent vector).
    """

    kl_per_dim: Tensor
    mean_variance: Tensor
    active_units: int
    mutual_information: float
    active_units_per_layer: tuple[int, ...] = ()


def _mean(q: Distribution) -> Tensor:
    """E_q[z] (B, K): closed form, or from 100 samples for distributions without one (flows);
    for a chain over latent layers, each layer's mean given one draw of the layer below
    (:meth:`~avi.models.hierarchical.GaussianChain.conditional_means`, Burda et al.'s statistic)."""
    conditional_means = getattr(q, "conditional_means", None)
    if conditional_means is not None:
        return cast(Tensor, conditional_means())
    try:
        return q.mean
    except NotImplementedError:
        return q.sample((100,)).mean(0)


def _variance_per_latent(means: Tensor) -> Tensor:
    """Var_x of the posterior means, (K,), from means (N, K), or (N, K, C) for one-hot
    categorical latents, where a latent's value is the trace over its C classes."""
    variance = means.var(0)
    return variance.flatten(1).sum(-1) if variance.ndim > 1 else variance


def _batches(n: int, batch_size: int, device: torch.device) -> list[Tensor]:
    if batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size}")
    return [torch.arange(s, min(s + batch_size, n), device=device) for s in range(0, n, batch_size)]


@torch.no_grad()
def posterior_mean_variance(posterior: nn.Module, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """Cov_x(E_q[z | x]) per latent dimension, (K,): how much each dimension's posterior mean
    moves across data points (for a categorical latent, the trace over its one-hot classes).
    Means come from ``q.mean``; for distributions without a closed-form mean (flows), from 100
    samples; for a chain over latent layers, given one draw of the layer below (:func:`_mean`).
    The posterior runs in evaluation mode (no training-only noise)."""
    with eval_mode(posterior):
        means = torch.cat([_mean(posterior(x[i], i)) for i in _batches(x.shape[0], batch_size, x.device)])
    return _variance_per_latent(means)


def active_units(posterior: nn.Module, x: Tensor, *, threshold: float = 0.01) -> int:
    """Burda, Grosse and Salakhutdinov (2016): dimension u is active if Cov_x(E_q[z_u | x]) > 0.01."""
    return int((posterior_mean_variance(posterior, x) > threshold).sum())


def active_units_by_layer(
    mean_variance: Tensor, layers: tuple[int, ...], *, threshold: float = 0.01
) -> tuple[int, ...]:
    """The active units (Cov_x(E_q[z_u | x]) > ``threshold``) of each latent layer, from the
    variances (K,) of the layers (K_1, ..., K_L) laid end to end: Burda et al.'s "16+5" is
    (16, 5). One count where ``layers`` do not add up to K (a model's own latent structure)."""
    if sum(layers) != mean_variance.numel():
        layers = (mean_variance.numel(),)
    return tuple(int((part > threshold).sum()) for part in mean_variance.split(layers))


def _marginals(q: Distribution, num_samples: int) -> Distribution:
    """q's marginals q(z_k | x), batch (B, K): a mean-field q's factors, a full-rank Gaussian's
    Gaussian marginals, else the Gaussians of the moments of ``num_samples`` draws (flows)."""
    if isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1:
        return q.base_dist
    if isinstance(q, MultivariateNormal):
        return Normal(q.loc, q.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt(), validate_args=False)
    z = q.sample((num_samples,))
    return Normal(z.mean(0), z.std(0), validate_args=False)


def _chain_kl(q: Distribution, prior: Distribution, num_samples: int) -> Tensor:
    """E_q[log q(z_k | its parents) - log p(z_k | its parents)] per point and dimension, (B, K),
    from ``num_samples`` draws of q, for a prior that is a chain over latent layers (its
    ``coordinate_log_prob``): terms that sum to KL(q || p) where q is a chain too or factorises;
    any other q is read through its marginals (:func:`_marginals`)."""
    z = q.sample((num_samples,))
    chain = getattr(q, "coordinate_log_prob", None)
    log_q = chain(z) if chain is not None else _marginals(q, num_samples).log_prob(z)
    return (log_q - prior.coordinate_log_prob(z)).mean(0)  # type: ignore[attr-defined]


def dimension_kl(q: Distribution, prior: Distribution, *, num_samples: int = 100) -> Tensor:
    """KL(q(z_k|x) || p(z_k)) per point and latent dimension, (B, K), for a factorised prior;
    for a prior that is a chain over latent layers (a hierarchical model's), the terms
    E_q[log q(z_k | its parents) - log p(z_k | its parents)] from ``num_samples`` draws
    (:func:`_chain_kl`; Sonderby et al. 2016's KL per unit).

    Exact for a mean-field q whose factors torch has a KL for (diagonal Gaussians), and for a
    full-rank Gaussian q (its marginals are Gaussian). A factorised q of other factors gets a
    Monte Carlo estimate from ``num_samples`` samples. Any other q (flows) is replaced by the
    Gaussians matching its marginals' moments (from ``num_samples`` samples); against a Gaussian
    prior that is a lower bound on each marginal KL (the Gaussian has the largest entropy for its
    variance). For a q that does not factorise, the marginal KLs sum to KL(q || p) minus the total
    correlation of q, not to KL(q || p).
    """
    if hasattr(prior, "coordinate_log_prob"):
        return _chain_kl(q, prior, num_samples)
    if not (isinstance(prior, Independent) and prior.reinterpreted_batch_ndims == 1):
        raise ConfigError("KL per dimension needs a prior that factorises over the latent dimensions")
    marginal = _marginals(q, num_samples)
    kl = analytic_kl_or_none(marginal, prior.base_dist)
    if kl is None:
        z = marginal.sample((num_samples,))
        kl = (marginal.log_prob(z) - prior.base_dist.log_prob(z)).mean(0)
    return kl


@torch.no_grad()
def batch_mutual_information(q: Distribution, *, chunk_size: int = 256) -> Tensor:
    """He et al. (2019)'s estimate of I(x; z) from one batch, as per-point terms (B,) (the
    estimate is their mean):

        term_i = -H[q(z|x_i)] - log (1/B) sum_j q(z_i | x_j),   z_i ~ q(z | x_i),

    the aggregate posterior q(z) = E_x q(z|x) replaced by the mixture over the batch. The entropy
    is exact where torch has it, else -log q(z_i|x_i). In expectation this is the InfoNCE bound
    (van den Oord et al. 2018): at most I(x; z) and at most log B. The B x B matrix
    log q(z_i|x_j) is formed ``chunk_size`` rows at a time.
    """
    z = q.sample()  # (B, *event): (B, K), or (B, N, C) for a categorical q
    n = z.shape[0]
    try:
        neg_entropy = -q.entropy()
    except NotImplementedError:
        neg_entropy = q.log_prob(z)
    log_qz = torch.cat(
        [
            torch.logsumexp(q.log_prob(z[s : s + chunk_size].unsqueeze(1).expand(-1, n, *z.shape[1:])), dim=1)
            for s in range(0, n, chunk_size)
        ]
    )
    return neg_entropy - (log_qz - math.log(n))


@torch.no_grad()
def mutual_information(posterior: nn.Module, x: Tensor, *, batch_size: int = 500) -> float:
    """I(x; z) in nats: :func:`batch_mutual_information` over consecutive batches of
    ``batch_size`` points, averaged with weights the batch sizes (He et al. 2019's ``calc_mi``);
    the posterior in evaluation mode."""
    with eval_mode(posterior):
        total = sum(
            batch_mutual_information(posterior(x[i], i)).sum().item()
            for i in _batches(x.shape[0], batch_size, x.device)
        )
    return total / x.shape[0]


@torch.no_grad()
def collapse_diagnostics(
    model: LatentVariableModel,
    posterior: nn.Module,
    x: Tensor,
    *,
    batch_size: int = 500,
    threshold: float = 0.01,
    mi_points: int | None = None,
) -> CollapseDiagnostics:
    """KL per dimension, active units (Cov_x(E_q[z_k|x]) > ``threshold``) and mutual information
    of ``posterior`` on x: (N, D), in one pass over batches of ``batch_size`` points (the batch of
    the mutual-information estimate: in expectation it cannot exceed log ``batch_size``), the
    posterior in evaluation mode (a denoising encoder left in training mode would add its input
    noise). ``mi_points`` limits the mutual information to the batches of the first that many
    points (its cost is batch_size densities per point: a pass per latent dimension each for a
    flow used in the inverse direction)."""
    prior = model.prior()
    kl, means, mi, mi_count = [], [], 0.0, 0
    with eval_mode(posterior):
        for index in _batches(x.shape[0], batch_size, x.device):
            q = posterior(x[index], index)
            kl.append(dimension_kl(q, prior).sum(0))
            means.append(_mean(q))
            if mi_points is None or mi_count < mi_points:
                mi += batch_mutual_information(q).sum().item()
                mi_count += index.numel()
    mean_variance = _variance_per_latent(torch.cat(means))
    return CollapseDiagnostics(
        torch.stack(kl).sum(0) / x.shape[0],
        mean_variance,
        int((mean_variance > threshold).sum()),
        mi / mi_count,
        active_units_by_layer(mean_variance, latent_layers(model), threshold=threshold),
    )
