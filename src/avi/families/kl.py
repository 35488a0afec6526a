"""Analytic KL divergences torch.distributions lacks, registered with ``register_kl``."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence, register_kl

__all__ = ["kl_diagonal_full_rank", "kl_full_rank_diagonal"]


@register_kl(MultivariateNormal, Independent)
def kl_full_rank_diagonal(q: MultivariateNormal, p: Independent) -> Tensor:
    """KL(N(m, L L^T) || prod_k N(mu_k, s_k^2)) =
    1/2 [sum_k (||L_k.||^2 + (m_k - mu_k)^2) / s_k^2 - K + sum_k log s_k^2 - log det L L^T]."""
    base = p.base_dist
    if not isinstance(base, Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    var_p = base.scale**2
    tril = q.scale_tril
    trace = (tril.pow(2).sum(-1) / var_p).sum(-1)
    maha = ((q.loc - base.loc).pow(2) / var_p).sum(-1)
    logdet_q = 2 * torch.diagonal(tril, dim1=-2, dim2=-1).log().sum(-1)
    k = q.event_shape[-1]
    return 0.5 * (trace + maha - k + var_p.log().sum(-1) - logdet_q)


@register_kl(Independent, MultivariateNormal)
def kl_diagonal_full_rank(q: Independent, p: MultivariateNormal) -> Tensor:
    """KL(prod_k N(m_k, s_k^2) || N(mu, Sigma)), through the full-rank form of q."""
    base = q.base_dist
    if not isinstance(base, Normal) or q.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    q_full = MultivariateNormal(base.loc, scale_tril=torch.diag_embed(base.scale), validate_args=False)
    return kl_divergence(q_full, p)
