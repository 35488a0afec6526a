"""Gradient estimators of the ELBO and the IWAE bound, as surrogate objectives.

Each function returns :class:`Terms` whose ``value`` is the bound's Monte Carlo estimate and
whose gradient, taken by the caller's single backward pass, is the named estimator's (the
surrogate-loss trick of Pyro: terms ``s - s.detach()`` add a gradient and no value). They work
for any q given as a Distribution of batch shape (B,), per-datapoint or amortized alike.

With z ~ q_phi(z|x), log w = log p_theta(x, z) - log q_phi(z|x):

- ``score`` (REINFORCE, Williams 1992; black-box VI, Ranganath et al. 2014): z drawn without a
  gradient path; d_phi ELBO = E[(log w - b) d_phi log q(z)] + E[d_phi log w], the last term
  -E[d_phi log q] = 0 in expectation. Any b that does not depend on z keeps it unbiased:
  ``baseline`` b = 0, a moving average of the learning signal (:class:`MovingAverageBaseline`),
  or an input-dependent network b(x) trained to regress log w (NVIL, :class:`NVILBaseline`),
  state that the caller owns and updates.
- ``vimco`` (Mnih and Rezende 2016): the k-sample IWAE bound L = log mean_i w_i with the score
  gradient sum_i (L - L_-i) d log q(z_i) + sum_i w~_i d log w_i, where L_-i replaces log w_i by
  the mean of the other k - 1 log-weights (a leave-one-out baseline per sample).
- ``stl`` (sticking the landing, Roeder, Wu and Duvenaud 2017): the reparameterised ELBO with
  log q evaluated at parameters cut from the graph, dropping the zero-mean score term; exact
  (zero variance) when q is the posterior.
- ``dreg`` (doubly reparameterised, Tucker, Lawson, Gu and Maddison 2019): for the IWAE bound,
  d_phi L = E[sum_i w~_i^2 d_z log w_i dz_i/dphi] with log q at cut parameters; the model
  keeps the IWAE gradient sum_i w~_i d_theta log p(x, z_i).
- ``gumbel`` (Jang, Gu and Poole 2017; Maddison, Mnih and Teh 2017): for categorical q, the
  ELBO at Gumbel-softmax relaxed samples, optionally straight-through (:func:`gumbel_terms`).

The model's gradient is the usual one in every case (z does not depend on theta).

References:
    Mnih and Gregor, "Neural Variational Inference and Learning in Belief Networks", ICML 2014.
    Mnih and Rezende, "Variational Inference for Monte Carlo Objectives", ICML 2016.
    Roeder, Wu and Duvenaud, "Sticking the Landing", NeurIPS 2017.
    Tucker, Lawson, Gu and Maddison, "Doubly Reparameterized Gradient Estimators for Monte
    Carlo Objectives", ICLR 2019.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, kl_divergence

from avi.errors import ConfigError
from avi.families.discrete import relaxed_sample
from avi.models.base import LatentVariableModel
from avi.objectives.bounds import Terms, check_count

__all__ = [
    "MovingAverageBaseline",
    "NVILBaseline",
    "dreg_terms",
    "gumbel_terms",
    "score_terms",
    "stl_terms",
    "stop_gradient",
    "vimco_terms",
]


class MovingAverageBaseline(nn.Module):
    """A scalar baseline b, the exponential moving average of the batch-mean learning signal.

    State the caller owns (a buffer, saved with the module) and updates after each step
    (:meth:`~avi.objectives.objective.Objective.update_state`), so b never depends on the draws
    it centres and the estimator stays unbiased. The caller computes the mean (under data
    parallelism over the global batch), so every rank keeps the single-process b.
    """

    value: Tensor

    def __init__(self, decay: float = 0.9) -> None:
        super().__init__()
        if not 0 <= decay < 1:
            raise ConfigError(f"the baseline decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("value", torch.tensor(math.nan))

    def forward(self, x: Tensor) -> Tensor:
        """b for each of the B points of x: (B,) (0 before the first update)."""
        b = torch.nan_to_num(self.value, nan=0.0)
        return b.to(x).expand(x.shape[0])

    @torch.no_grad()
    def update(self, mean: Tensor) -> None:
        """b <- decay * b + (1 - decay) * ``mean`` (b <- mean at the first update), ``mean`` the
        batch mean of the signal. The state follows the mean to its device (a baseline made on
        the CPU for GPU data)."""
        if self.value.device != mean.device:
            self.value = self.value.to(mean.device)
        mean = mean.to(self.value.dtype)
        # torch.where, not a Python branch on the value: no host synchronisation per step on a GPU
        self.value.copy_(torch.where(self.value.isnan(), mean, self.decay * self.value + (1 - self.decay) * mean))


class NVILBaseline(nn.Module):
    """NVIL's input-dependent baseline b(x) = net(x) + c (Mnih and Gregor 2014), x: (B, D) -> (B,).

    ``net`` is a small MLP; c a moving average of the signal (their data-independent part).
    :func:`score_terms` adds the regression -(log w - b(x))^2 to the surrogate with no value,
    so the caller's optimiser, given this module's parameters, fits b(x) to the signal.
    """

    def __init__(self, data_dim: int, hidden: int = 32, decay: float = 0.9) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(data_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.centre = MovingAverageBaseline(decay)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1) + self.centre(x)

    def update(self, mean: Tensor) -> None:
        """Move c towards ``mean``, the batch mean of the signal."""
        self.centre.update(mean)


def stop_gradient(q: Distribution) -> Distribution:
    """q with its parameters cut from the graph (same density, no gradient to phi).

    Defined for Normal, MultivariateNormal and Independent wrappers of them (the Gaussian
    families); other families raise :class:`ConfigError`.
    """
    if isinstance(q, Independent):
        return Independent(stop_gradient(q.base_dist), q.reinterpreted_batch_ndims, validate_args=False)
    if isinstance(q, Normal):
        return Normal(q.loc.detach(), q.scale.detach(), validate_args=False)
    if isinstance(q, MultivariateNormal):
        return MultivariateNormal(q.loc.detach(), scale_tril=q.scale_tril.detach(), validate_args=False)
    raise ConfigError(f"the stl and dreg estimators need a reparameterised Gaussian family, not {type(q).__name__}")


def _log_joint(model: LatentVariableModel, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    return model.likelihood(z).log_prob(x), model.prior().log_prob(z)


def score_terms(
    model: LatentVariableModel, q: Distribution, x: Tensor, *, num_samples: int = 1, baseline: nn.Module | None = None
) -> Terms:
    """The ELBO with the score-function gradient for q, S = ``num_samples`` draws, (B,) for x: (B, D).

    ``baseline``: None (plain REINFORCE), a :class:`MovingAverageBaseline` or an
    :class:`NVILBaseline`; a module with ``forward(x) -> (B,)``, read and not updated here (the
    returned ``signal`` is what its update takes). A baseline with parameters is also regressed
    onto the signal through the surrogate.
    """
    check_count("num_samples", num_samples)
    with torch.no_grad():
        z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    log_lik, log_prior = _log_joint(model, x, z)
    log_w = log_lik + log_prior - log_q
    signal = log_w.detach()
    b = torch.zeros_like(signal) if baseline is None else baseline(x)
    score = (log_q * (signal - b.detach())).mean(0)
    surrogate = log_w.mean(0) + score - score.detach()
    if baseline is not None:
        regression = ((signal - b) ** 2).mean(0)
        surrogate = surrogate - (regression - regression.detach())
    return Terms(surrogate, log_lik.mean(0), (log_q - log_prior).mean(0), signal)


def vimco_terms(model: LatentVariableModel, q: Distribution, x: Tensor, *, k: int) -> Terms:
    """The IWAE bound with k >= 2 samples and VIMCO's leave-one-out score gradient, (B,)."""
    check_count("k", k)
    if k < 2:
        raise ConfigError(f"vimco needs k >= 2 samples per point, got {k}")
    with torch.no_grad():
        z = q.sample((k,))
    log_q = q.log_prob(z)
    log_lik, log_prior = _log_joint(model, x, z)
    log_w = log_lik + log_prior - log_q
    iwae = torch.logsumexp(log_w, 0) - math.log(k)
    with torch.no_grad():
        lw = log_w.detach()
        others = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # mean of the other log-weights, (k, B)
        # L_-i: log mean of the weights with w_i replaced by exp(others_i)
        diag = torch.eye(k, dtype=torch.bool, device=lw.device).unsqueeze(-1)  # (k, k, 1): row i replaces entry i
        swapped = torch.where(diag, others.unsqueeze(1), lw.unsqueeze(0))  # (k, k, B)
        leave_one_out = torch.logsumexp(swapped, 1) - math.log(k)
        signal = iwae.detach() - leave_one_out
    score = (log_q * signal).sum(0)
    return Terms(iwae + score - score.detach(), log_lik.mean(0), (log_q - log_prior).mean(0))


def stl_terms(model: LatentVariableModel, q: Distribution, x: Tensor, *, num_samples: int = 1) -> Terms:
    """The ELBO with the sticking-the-landing (path-derivative) gradient, (B,) for x: (B, D)."""
    check_count("num_samples", num_samples)
    fixed = stop_gradient(q)
    z = q.rsample((num_samples,))
    log_q = fixed.log_prob(z)
    log_lik, log_prior = _log_joint(model, x, z)
    value = (log_lik + log_prior - log_q).mean(0)
    return Terms(value, log_lik.mean(0), (log_q - log_prior).mean(0))


def dreg_terms(model: LatentVariableModel, q: Distribution, x: Tensor, *, k: int) -> Terms:
    """The IWAE bound with k samples and the doubly reparameterised gradient, (B,)."""
    check_count("k", k)
    fixed = stop_gradient(q)
    z = q.rsample((k,))
    log_q = fixed.log_prob(z)
    log_lik, log_prior = _log_joint(model, x, z)
    log_lik_fixed, log_prior_fixed = _log_joint(model, x, z.detach())
    log_w_model = log_lik_fixed + log_prior_fixed - log_q.detach()  # gradient to theta only
    iwae = torch.logsumexp(log_w_model, 0) - math.log(k)
    # through z only: log p(x, z) - log p(x, z.detach()) has zero value and zero theta-gradient
    log_w_path = log_lik + log_prior - log_lik_fixed - log_prior_fixed - log_q
    weights = torch.softmax(log_w_model.detach(), 0)
    path = (weights**2 * log_w_path).sum(0)
    return Terms(iwae + path - path.detach(), log_lik.mean(0), (log_q - log_prior).mean(0))


def gumbel_terms(
    model: LatentVariableModel,
    q: Distribution,
    x: Tensor,
    *,
    temperature: float,
    straight_through: bool = False,
    num_samples: int = 1,
) -> Terms:
    """The ELBO of a categorical or Bernoulli q with Gumbel-softmax / binary Concrete samples,
    (B,) for x: (B, D).

    E_q[log p(x|z)] is estimated at relaxed samples z (Jang et al. 2017; Maddison et al. 2017),
    which the model's likelihood must accept (one-hot vectors relaxed to the simplex, bits to
    [0, 1]); the KL to the prior is exact. The gradient is biased, less so as ``temperature``
    -> 0 at the price of variance. With ``straight_through`` z is discrete (one-hot or binary),
    so the value is an unbiased ELBO estimate while the gradient stays the relaxed one.
    """
    check_count("num_samples", num_samples)
    z = relaxed_sample(q, (num_samples,), temperature, straight_through)
    reconstruction = model.likelihood(z).log_prob(x).mean(0)
    kl = kl_divergence(q, model.prior())
    return Terms(reconstruction - kl, reconstruction, kl)
