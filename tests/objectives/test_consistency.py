"""The consistency penalty KL(q(z|x) || q(z|t(x))) and its wrapper around an objective."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence

from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.families import make_family
from avi.models import LinearGaussian
from avi.objectives import ELBO, elbo_terms
from avi.objectives.consistency import Consistency, posterior_kl


def _encoder_posterior(name: str = "mean-field") -> AmortizedPosterior:
    family = make_family(name, 2)
    return AmortizedPosterior(mlp_encoder(5, (), family.param_size), family).double()


def test_penalty_is_the_kl_between_the_two_encoder_outputs(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    posterior = _encoder_posterior()
    shift = lambda x: x + 0.5  # noqa: E731
    objective = Consistency(ELBO(), posterior, shift, weight=2.0)
    q = posterior(ppca_x)
    torch.manual_seed(1)
    terms = objective(ppca, q, ppca_x)
    torch.manual_seed(1)
    plain = elbo_terms(ppca, q, ppca_x, analytic_kl=True)
    penalty = kl_divergence(q, posterior(ppca_x + 0.5))
    torch.testing.assert_close(terms.value, plain.value - 2.0 * penalty)
    torch.testing.assert_close(terms.reconstruction - terms.kl, plain.value)  # the logged ELBO is unchanged
    assert (penalty > 0).all()


def test_identity_transform_costs_nothing_and_gradients_reach_the_encoder(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    posterior = _encoder_posterior("full-rank")
    q = posterior(ppca_x)
    assert posterior_kl(q, posterior(ppca_x)).abs().max() < 1e-10
    objective = Consistency(ELBO(), posterior, lambda x: -x, weight=1.0)
    objective(ppca, posterior(ppca_x), ppca_x).value.sum().backward()
    assert all(p.grad is not None for p in posterior.parameters())


def test_monte_carlo_fallback_estimates_the_kl() -> None:
    # with no registered KL (wrapped so torch does not know the pair), 20,000 samples give the
    # analytic value to within 4 standard errors (sd of the log-ratio / sqrt(S))
    a = Independent(Normal(torch.zeros(3, 2, dtype=torch.float64), 1.0), 1)
    b = Independent(Normal(torch.full((3, 2), 0.5, dtype=torch.float64), 1.5), 1)

    class Opaque(torch.distributions.Distribution):
        arg_constraints: dict = {}

        def __init__(self, base: torch.distributions.Distribution) -> None:
            self.base = base
            super().__init__(base.batch_shape, base.event_shape, validate_args=False)

        def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
            return self.base.rsample(sample_shape)

        def log_prob(self, value: Tensor) -> Tensor:
            return self.base.log_prob(value)

    estimate = posterior_kl(Opaque(a), Opaque(b), num_samples=20_000)
    z = a.sample((20_000,))
    se = (a.log_prob(z) - b.log_prob(z)).std(0) / 20_000**0.5
    assert ((estimate - kl_divergence(a, b)).abs() < 4 * se).all()


def test_negative_weight_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        Consistency(ELBO(), _encoder_posterior(), lambda x: x, weight=-1.0)
