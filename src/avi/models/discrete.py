"""Models with discrete latent variables, for the score-function and Gumbel-softmax estimators.

- :class:`GaussianMixture`: one categorical assignment per point, z in {e_1..e_K} (one-hot,
  event shape (1, K)); p(z) = Cat(softmax(a)), p(x | z) = N(sum_k z_k mu_k, sigma^2 I). The
  means mu and the mixture logits a are learned; log p(x) and p(z | x) are exact.
- :class:`SigmoidBeliefNet`: H binary units, p(z) = prod_h Bernoulli(sigmoid(b_h)),
  p(x | z) = prod_d Bernoulli(sigmoid(f(z)_d)), f an MLP; with no hidden layer f(z) = W z + c,
  the one-layer sigmoid belief net of Neal (1992) that NVIL trains (Mnih and Gregor 2014).
- :class:`CategoricalVAE`: N categorical variables with C classes each (one-hot, event shape
  (N, C)) under a uniform prior, p(x | z) Bernoulli from an MLP of vec(z): the discrete VAE of
  Jang, Gu and Poole (2017) on MNIST (N = 20, C = 10 there: 10^20 states).

Every likelihood also accepts relaxed z (points of the simplex, or of (0, 1)^H), as the
``gumbel`` estimator needs. ``latent_states()`` lists every latent configuration of a small
model, for exact enumeration (:func:`avi.evaluation.enumerated_bounds`).

References:
    Neal, "Connectionist learning of belief networks", Artificial Intelligence 1992.
    Mnih and Gregor, "Neural Variational Inference and Learning in Belief Networks", ICML 2014.
    Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, OneHotCategorical, register_kl

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.models.bernoulli import factorised_bernoulli
from avi.nn import mlp

__all__ = ["MAX_STATES", "BroadcastBernoulli", "CategoricalVAE", "GaussianMixture", "SigmoidBeliefNet"]

#: ``latent_states()`` refuses latent spaces with more configurations than this
MAX_STATES = 2**16


def _check_states(count: int) -> None:
    if count > MAX_STATES:
        raise ConfigError(f"{count:,} latent configurations are too many to enumerate (limit {MAX_STATES:,})")


def _one_hot_sample(logits: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """n draws of independent one-hot categoricals with logits (N, C): (n, N, C)."""
    index = torch.multinomial(torch.softmax(logits, -1), n, replacement=True, generator=generator)  # (N, n)
    return F.one_hot(index.T, logits.shape[-1]).to(logits.dtype)


def _categorical(logits: Tensor) -> Distribution:
    return Independent(OneHotCategorical(logits=logits, validate_args=False), 1, validate_args=False)


class BroadcastBernoulli(Bernoulli):
    """A Bernoulli whose KL from a Bernoulli q broadcasts their batch shapes: torch's
    ``kl_divergence(Bernoulli, Bernoulli)`` indexes with a mask of the prior's shape, which
    fails for a prior of batch (H,) against a q of batch (B, H)."""


@register_kl(Bernoulli, BroadcastBernoulli)
def _kl_bernoulli(q: Bernoulli, p: BroadcastBernoulli) -> Tensor:
    """KL(q || p) = sum_{v in {0, 1}} q(v) (log q(v) - log p(v)), from the logits a, b:
    sigmoid(a) (log sigmoid(a) - log sigmoid(b)) + sigmoid(-a) (log sigmoid(-a) - log sigmoid(-b))."""
    a, b = q.logits, p.logits
    return torch.sigmoid(a) * (F.logsigmoid(a) - F.logsigmoid(b)) + torch.sigmoid(-a) * (
        F.logsigmoid(-a) - F.logsigmoid(-b)
    )


def _bernoulli(logits: Tensor, kind: type[Bernoulli] = Bernoulli) -> Distribution:
    if kind is Bernoulli:
        return factorised_bernoulli(logits)
    return Independent(kind(logits=logits, validate_args=False), 1, validate_args=False)


class GaussianMixture(LatentVariableModel):
    """p(z) = Cat(softmax(a)) over K components (one-hot z, event (1, K)); p(x | z) =
    N(z^T mu, sigma^2 I_D) with a fixed ``scale`` sigma. Parameters ``means`` mu (K, D) and
    ``logits`` a (K,); the latent family is :class:`~avi.families.discrete.CategoricalFamily` (1, K).

    Exact: log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, sigma^2 I)] and
    p(z_k = 1 | x) = softmax_k of the same terms.
    """

    def __init__(
        self,
        data_dim: int,
        num_components: int,
        scale: float = 1.0,
        *,
        means: Tensor | None = None,
        logits: Tensor | None = None,
    ) -> None:
        """Means N(0, I) and equal weights unless ``means`` (K, D) and ``logits`` (K,) are given."""
        super().__init__()
        if num_components < 2:
            raise ConfigError(f"a mixture needs at least 2 components, got {num_components}")
        if not scale > 0:
            raise ConfigError(f"the mixture's component scale must be positive, got {scale}")
        self.data_dim, self.num_components, self.scale = data_dim, num_components, scale
        self.latent_dim = num_components
        self.means = nn.Parameter(torch.randn(num_components, data_dim) if means is None else means.clone())
        self.logits = nn.Parameter(torch.zeros(num_components) if logits is None else logits.clone())

    @classmethod
    def from_parameters(cls, means: Tensor, logits: Tensor, scale: float) -> GaussianMixture:
        """A mixture with the given means (K, D) and mixture logits (K,) (dtype kept)."""
        return cls(means.shape[1], means.shape[0], scale, means=means, logits=logits)

    def prior(self) -> Distribution:
        return _categorical(self.logits.unsqueeze(0))

    def likelihood(self, z: Tensor) -> Distribution:
        """N(z^T mu, sigma^2 I) for z (..., 1, K), one-hot or relaxed: batch (...), event (D,)."""
        return Independent(Normal(z.squeeze(-2) @ self.means, self.scale, validate_args=False), 1, validate_args=False)

    def _component_log_joint(self, x: Tensor) -> Tensor:
        """log pi_k + log N(x_i; mu_k, sigma^2 I): (B, K)."""
        square = (x.unsqueeze(-2) - self.means).square().sum(-1)  # exact: cdist's mm form cancels in float32
        log_normal = -0.5 * square / self.scale**2 - self.data_dim * (
            math.log(self.scale) + 0.5 * math.log(2 * math.pi)
        )
        return torch.log_softmax(self.logits, 0) + log_normal

    def exact_log_marginal(self, x: Tensor) -> Tensor:
        """log p(x): (B,)."""
        return torch.logsumexp(self._component_log_joint(x), -1)

    def exact_posterior(self, x: Tensor) -> Distribution:
        """p(z | x): one-hot categorical, batch (B,), event (1, K)."""
        return _categorical(self._component_log_joint(x).unsqueeze(-2))

    def latent_states(self) -> Tensor:
        """The K one-hot assignments: (K, 1, K)."""
        return torch.eye(self.num_components, dtype=self.means.dtype, device=self.means.device).unsqueeze(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        z = _one_hot_sample(self.logits.unsqueeze(0), n, generator)
        return self.sample_data(z, generator), z

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = z.squeeze(-2) @ self.means
        return mean + self.scale * torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)


class SigmoidBeliefNet(LatentVariableModel):
    """p(z) = prod_h Bernoulli(sigmoid(b_h)) over H binary units (learned ``prior_logits`` b);
    p(x | z) = prod_d Bernoulli(sigmoid(f(z)_d)), f = MLP ``H -> hidden... -> D`` (affine for
    ``hidden=()``). The latent family is :class:`~avi.families.discrete.BernoulliFamily`."""

    binary_data = True

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (), activation: str = "tanh") -> None:
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim))
        self.decoder = mlp([latent_dim, *hidden, data_dim], activation)

    def prior(self) -> Distribution:
        return _bernoulli(self.prior_logits, BroadcastBernoulli)

    def likelihood(self, z: Tensor) -> Distribution:
        return _bernoulli(self.decoder(z))

    def latent_states(self) -> Tensor:
        """All 2^H binary vectors: (2^H, H)."""
        _check_states(2**self.latent_dim)
        states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=self.latent_dim)))
        return states.to(self.prior_logits)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        z = torch.bernoulli(torch.sigmoid(self.prior_logits).expand(n, -1), generator=generator)
        return self.sample_data(z, generator), z

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.decoder(z)), generator=generator)


class CategoricalVAE(LatentVariableModel):
    """p(z) = prod_n Cat(z_n; uniform over C classes), z one-hot (N, C); p(x | z) =
    prod_d Bernoulli(sigmoid(f(vec z)_d)), f = MLP ``N C -> hidden... -> D``. The latent
    family is :class:`~avi.families.discrete.CategoricalFamily` (N, C)."""

    binary_data = True
    prior_logits: Tensor

    def __init__(
        self, data_dim: int, num_vars: int, num_classes: int, hidden: Sequence[int] = (400,), activation: str = "relu"
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"a categorical latent needs at least 2 classes, got {num_classes}")
        self.data_dim, self.num_vars, self.num_classes = data_dim, num_vars, num_classes
        self.latent_dim = num_vars * num_classes
        self.register_buffer("prior_logits", torch.zeros(num_vars, num_classes))
        self.decoder = mlp([self.latent_dim, *hidden, data_dim], activation)

    def prior(self) -> Distribution:
        return _categorical(self.prior_logits)

    def likelihood(self, z: Tensor) -> Distribution:
        """p(x | z) for z (..., N, C), one-hot or relaxed: batch (...), event (D,)."""
        return _bernoulli(self.decoder(z.flatten(-2)))

    def latent_states(self) -> Tensor:
        """All C^N configurations, one-hot: (C^N, N, C) (small models only)."""
        _check_states(self.num_classes**self.num_vars)
        index = torch.tensor(list(itertools.product(range(self.num_classes), repeat=self.num_vars)))
        return F.one_hot(index, self.num_classes).to(self.prior_logits)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        z = _one_hot_sample(self.prior_logits, n, generator)
        return self.sample_data(z, generator), z

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.decoder(z.flatten(-2))), generator=generator)
