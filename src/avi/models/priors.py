"""Learned priors p(z) of the VAE: a mixture of Gaussians, and the VampPrior.

Each is a module whose ``forward()`` is a :class:`MixtureOfGaussians`, a torch ``Distribution``
with batch shape () and event shape (K,), so that every objective, evaluation and diagnostic
reads it as it reads N(0, I):

- :class:`MoGPrior`: p(z) = sum_c pi_c N(z; mu_c, diag(s_c^2)), C components whose means,
  scales and weights are learned.
- :class:`VampPrior` (Tomczak and Welling 2018): p(z) = (1/C) sum_c q(z | u_c), the mixture of
  the encoder's posteriors at C pseudo-inputs u_c in data space, learned with the model.

KL(q || p) has no closed form against a mixture: the objectives estimate it from their samples,
log q(z) - log p(z) (:func:`avi.objectives.bounds.analytic_kl_or_none` finds no analytic KL).

Speed. For diagonal components the log densities at n points of all C components come from one
matrix product (:func:`_diagonal_terms`) in place of an (n, C, K) block, in float64, where
expanding the square costs no accuracy (a float32 expansion would lose up to a nat near a
narrow component far from 0). Every log-sum-exp floors its shifted terms at ``EXP_FLOOR``
(:func:`_logsumexp`): torch's float32 exp takes 20 to 70 times longer (AMD EPYC, AVX2) where
its result underflows, to a subnormal number or 0, as most of a mixture's terms do.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, constraints, register_kl

from avi.errors import ConfigError

__all__ = ["BLOCK", "EXP_FLOOR", "MixtureOfGaussians", "MoGPrior", "VampPrior", "pseudo_input_start"]

#: numbers in the block a mixture's density is formed in at a time: (rows, components) for
#: diagonal components, (rows, components, dimensions) for full-rank ones and for the marginals.
#: All at once, evaluation's 10^5 samples against 500 components of 50 dimensions would hold
#: 10 GB; 2^20 keeps a block near the cache
BLOCK = 2**20

#: the floor of exp's argument in :func:`_logsumexp`, the terms less the largest: e^-87 is
#: float32's least normal number (about), so no exp underflows; a term below it, raised to
#: e^-87, moves the sum of C terms (the largest is 1) by less than C e^-87 = C 1.6e-38, a
#: relative change below 1e-30 for any C up to 10^7: far below float32 and float64 rounding
EXP_FLOOR = -87.0


def _by_rows(value: Tensor, width: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` of the rows of value (..., K), (n, K) -> (n, ...), taken ``BLOCK // width`` rows
    at a time, shaped back to value's leading shape."""
    rows = value.reshape(-1, value.shape[-1])
    step = max(1, BLOCK // width)
    out = torch.cat([fn(rows[s : s + step]) for s in range(0, max(rows.shape[0], 1), step)])
    return out.reshape(*value.shape[:-1], *out.shape[1:])


def _records_grad(*tensors: Tensor) -> bool:
    """Whether autograd records an operation on any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _logsumexp(terms: Tensor, dim: int) -> Tensor:
    """log sum exp(terms) along ``dim``, as ``torch.logsumexp``: m + log sum exp(t - m), m the
    largest term, each t - m floored at :data:`EXP_FLOOR` (a change below rounding); the
    terms are overwritten where autograd does not record them. All terms -inf give -inf."""
    top = terms.detach().amax(dim, keepdim=True)
    shift = torch.where(top.isfinite(), top, 0.0)
    if terms.requires_grad:
        out = (terms - shift).clamp_min(EXP_FLOOR).exp().sum(dim).log() + shift.squeeze(dim)
    else:
        out = terms.sub_(shift).clamp_min_(EXP_FLOOR).exp_().sum(dim).log_().add_(shift.squeeze(dim))
    top = top.squeeze(dim)
    return torch.where(top == -math.inf, top, out)


def _diagonal_terms(rows: Tensor, weight: Tensor, offset: Tensor) -> Tensor:
    """log w_c + log N(z; mu_c, diag(s_c^2)) (n, C) at rows z (n, K), in float64: with a = 1/s^2,

        log w_c + log N(z; mu_c, s_c) = [z, z^2] . [a_c mu_c, -a_c / 2] + offset_c,
        offset_c = log w_c - (1/2) sum_k a_ck mu_ck^2 - sum_k log s_ck - (K/2) log 2 pi,

    one product of [z, z^2] (n, 2K) with ``weight`` (2K, C) = [a mu, -a / 2]^T plus ``offset``
    (C,). The expansion cancels: its float64 error is at most about (2K + 3) u sum_k
    a_ck (|z_k| + |mu_ck|)^2, u = 2^-53: for K = 40 and every (|z_k| + |mu_ck|) / s_ck up to
    300 (a component of scale 0.02 at 3 from 0) 3e-8 nats, below float32 rounding."""
    z = rows.to(weight.dtype)
    return torch.addmm(offset, torch.cat([z, z * z], dim=-1), weight)


def _gaussian_factor(components: Distribution) -> tuple[Tensor, Tensor, bool]:
    """(loc (C, K), scale, diagonal) of Gaussian components of batch (C,): scale (C, K) for
    independent Normals, the Cholesky factor (C, K, K) for a full-rank Gaussian."""
    if isinstance(components, MultivariateNormal):
        return components.loc, components.scale_tril, False
    if (
        isinstance(components, Independent)
        and isinstance(components.base_dist, Normal)
        and components.reinterpreted_batch_ndims == 1
    ):
        return components.base_dist.loc, components.base_dist.scale, True
    raise ConfigError(
        f"a mixture prior's components must be Gaussian (mean-field or full-rank), not {type(components).__name__}"
    )


class _Marginals(Distribution):
    """p(z_k) = sum_c w_c N(z_k; mu_ck, s_ck^2) for each dimension k: batch (K,), event ()."""

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real

    def __init__(self, log_weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        self.log_weights, self.loc, self.scale = log_weights, loc, scale
        super().__init__(batch_shape=loc.shape[-1:], validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        """(..., K) -> (..., K): logsumexp_c [log w_c - log s_ck - (1/2) log 2 pi
        - (1/2) ((z_k - mu_ck) / s_ck)^2], formed (rows, K, C) at a time, in place where
        autograd records nothing (the diagnostics' case)."""
        loc, inverse = self.loc.T.contiguous(), self.scale.reciprocal().T.contiguous()  # (K, C)
        offset = (self.log_weights[:, None] - self.scale.log() - 0.5 * math.log(2 * math.pi)).T.contiguous()
        grad = _records_grad(value, self.loc, self.scale, self.log_weights)

        def block(rows: Tensor) -> Tensor:
            gap = rows[:, :, None] - loc  # (n, K, C)
            if grad:
                gap = gap * inverse
                return _logsumexp(torch.addcmul(offset, gap, gap, value=-0.5), -1)
            return _logsumexp(gap.mul_(inverse).square_().mul_(-0.5).add_(offset), -1)

        return _by_rows(value, self.loc.numel(), block)

    @property
    def mean(self) -> Tensor:
        """sum_c w_c mu_c, (K,)."""
        return (self.log_weights.exp()[:, None] * self.loc).sum(0)

    @property
    def variance(self) -> Tensor:
        """sum_c w_c (s_c^2 + mu_c^2) - mean^2, (K,)."""
        second = (self.log_weights.exp()[:, None] * (self.scale.pow(2) + self.loc.pow(2))).sum(0)
        return second - self.mean.pow(2)


class MixtureOfGaussians(Independent):
    """p(z) = sum_c w_c N(z; mu_c, Sigma_c) over z in R^K: ``components`` of batch (C,) and event
    (K,), diagonal (``Independent`` Normals) or full-rank (``MultivariateNormal``); weights
    w = softmax(``logits``), (C,). log p(z) = logsumexp_c (log w_c + log N(z; mu_c, Sigma_c)),
    formed :data:`BLOCK` numbers at a time.

    An ``Independent`` in form only: ``base_dist`` holds the marginals p(z_k) = sum_c w_c
    N(z_k; mu_ck, Sigma_c,kk), batch (K,), which diagnostics per dimension read
    (KL(q(z_k|x) || p(z_k)) in :func:`avi.evaluation.collapse.dimension_kl`); ``log_prob``,
    ``sample``, ``mean`` and ``variance`` are the joint mixture's. It has no ``rsample`` and no
    analytic KL (the one registered below declines), so a KL to it is estimated by Monte Carlo;
    and its ``base_dist`` is no factor of it: free bits per dimension do not apply.
    """

    def __init__(self, logits: Tensor, components: Distribution) -> None:
        self.components = components
        self.loc, self.scale, self.diagonal = _gaussian_factor(components)
        self.log_weights = torch.log_softmax(logits, dim=-1)
        marginal_scale = self.scale if self.diagonal else self.scale.pow(2).sum(-1).sqrt()
        super().__init__(_Marginals(self.log_weights, self.loc, marginal_scale), 1, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        """(..., K) -> (...): logsumexp_c (log w_c + log N(z; mu_c, Sigma_c)); for diagonal
        components from one matrix product per block of rows (:func:`_diagonal_terms`, float64),
        rounded to value's dtype at the end."""
        if not self.diagonal:
            return _by_rows(
                value,
                self.loc.numel(),
                lambda rows: _logsumexp(self.components.log_prob(rows[:, None]) + self.log_weights, -1),
            )
        loc, scale = self.loc.double(), self.scale.double()
        precision = scale.pow(-2)  # a = 1/s^2, (C, K)
        weight = torch.cat([loc * precision, -0.5 * precision], dim=-1).T  # (2K, C)
        offset = self.log_weights - 0.5 * (loc.pow(2) * precision).sum(-1) - scale.log().sum(-1)
        offset = offset - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        return _by_rows(
            value, self.loc.shape[0], lambda rows: _logsumexp(_diagonal_terms(rows, weight, offset), -1)
        ).to(value.dtype)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        """z ~ p(z), (*sample_shape, K), from the global generator."""
        shape = torch.Size(sample_shape)
        return self.draw(shape.numel()).reshape(*shape, self.loc.shape[-1])

    @torch.no_grad()
    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ p(z), (n, K), from ``generator``: a component c ~ w, then mu_c + L_c eps."""
        weights = self.log_weights.exp()
        index = (
            torch.multinomial(weights, n, replacement=True, generator=generator)
            if n > 0
            else torch.zeros(0, dtype=torch.long, device=weights.device)
        )
        eps = torch.randn(n, self.loc.shape[-1], generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        if self.diagonal:
            return self.loc[index] + self.scale[index] * eps
        return self.loc[index] + (self.scale[index] @ eps[:, :, None]).squeeze(-1)


@register_kl(Independent, MixtureOfGaussians)
@register_kl(MultivariateNormal, MixtureOfGaussians)
def _no_closed_form(q: Distribution, p: MixtureOfGaussians) -> Tensor:
    """KL(q || mixture) has no closed form: the caller estimates it. Registered so that torch's
    dispatch never reaches the KL of two ``Independent``, which would read the mixture's
    marginals as its factors."""
    raise NotImplementedError


class MoGPrior(nn.Module):
    """p(z) = sum_c softmax(a)_c N(z; mu_c, diag(softplus(rho_c)^2)), C = ``components``
    Gaussians over R^K with learned weights a (C,), means mu (C, K) and scales rho (C, K).

    Starts with equal weights, unit scales and means drawn from N(0, I) (the global generator):
    components that started equal would get equal gradients and stay equal.
    """

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__()
        if components < 1:
            raise ConfigError(f"a mixture prior needs at least one component, got {components}")
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, latent_dim))
        self.raw_scale = nn.Parameter(torch.full((components, latent_dim), math.log(math.expm1(1.0))))

    def forward(self) -> MixtureOfGaussians:
        scale = F.softplus(self.raw_scale)
        components = Independent(Normal(self.loc, scale, validate_args=False), 1, validate_args=False)
        return MixtureOfGaussians(self.logits, components)


class VampPrior(nn.Module):
    """p(z) = (1/C) sum_c q(z | u_c) (Tomczak and Welling 2018, "VAE with a VampPrior"): the
    mixture of the posterior q(z | x) at C pseudo-inputs u (C, D), learned with the model.

    The posterior (an encoder of x with a Gaussian family) is given by :meth:`attach`,
    referenced, not owned: its parameters stay the posterior's, trained by its optimiser (the
    prior's gradient reaches them, as in the paper) and saved in its state; the model's state
    holds u. The pseudo-inputs are unconstrained (the paper clamps them to [0, 1] with a
    hardtanh, whose gradient vanishes outside; pythae's start puts half of them there).
    """

    posterior: nn.Module | None

    def __init__(self, pseudo_inputs: Tensor) -> None:
        super().__init__()
        self.pseudo_inputs = nn.Parameter(pseudo_inputs)
        object.__setattr__(self, "posterior", None)  # referenced, never a submodule

    @property
    def attached(self) -> bool:
        """Whether a posterior has been attached."""
        return self.posterior is not None

    def attach(self, posterior: nn.Module) -> None:
        """Use ``posterior``, a module x (B, D) -> q(z | x) with ``amortized`` true, as q."""
        if not getattr(posterior, "amortized", False):
            raise ConfigError("the VampPrior needs an amortized posterior: an encoder of x (strategy 'amortized')")
        object.__setattr__(self, "posterior", posterior)

    def forward(self) -> MixtureOfGaussians:
        if self.posterior is None:
            raise ConfigError(
                "the VampPrior has no posterior to mix: attach one (avi.runs.build.build_posterior attaches the run's)"
            )
        q = self.posterior(self.pseudo_inputs)
        return MixtureOfGaussians(self.pseudo_inputs.new_zeros(self.pseudo_inputs.shape[0]), q)


def pseudo_input_start(components: int, data_dim: int, x: Tensor | None = None) -> Tensor:
    """Where C = ``components`` pseudo-inputs u (C, D) start: at C training points of x (N, D)
    drawn at random (with replacement where C > N), each plus N(0, 0.01^2) noise so that
    repeated points part, as Tomczak and Welling's training-data start; without data at
    N(0.05, 0.01^2) in every dimension, their start for binary images. The global generator."""
    if components < 1:
        raise ConfigError(f"a VampPrior needs at least one pseudo-input, got {components}")
    if x is None:
        return 0.05 + 0.01 * torch.randn(components, data_dim)
    n = x.shape[0]
    index = torch.randperm(n)[:components] if components <= n else torch.randint(n, (components,))
    return x[index].float() + 0.01 * torch.randn(components, data_dim)
