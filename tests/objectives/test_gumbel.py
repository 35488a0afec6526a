"""The Gumbel-softmax estimator and the categorical family, against exact enumeration of a tiny
model with N = 2 categorical latents of C = 3 classes (9 states) and a Gaussian likelihood."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal, OneHotCategorical

from avi.errors import ConfigError
from avi.families.discrete import CategoricalFamily, relaxed_sample
from avi.models.base import LatentVariableModel
from avi.objectives.estimators import gumbel_terms, score_terms, stl_terms

N, C, D = 2, 3, 4
FAMILY = CategoricalFamily(N, C)


class CategoricalGaussian(LatentVariableModel):
    """z_n ~ Cat(uniform), x ~ N(W vec(z), I): (N, C) one-hot (or relaxed) z -> (D,) x."""

    def __init__(self) -> None:
        super().__init__()
        self.W = torch.randn(D, N * C, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def prior(self) -> Distribution:
        return Independent(OneHotCategorical(logits=torch.zeros(N, C, dtype=torch.float64)), 1)

    def likelihood(self, z: Tensor) -> Distribution:
        return Independent(Normal(z.flatten(-2) @ self.W.T, 1.0), 1)


def exact_elbo(model: CategoricalGaussian, q: Distribution, x: Tensor) -> Tensor:
    """sum over the 9 states of q(z) [log p(x, z) - log q(z)], (B,)."""
    states = torch.stack([F.one_hot(torch.tensor(s), C) for s in itertools.product(range(C), repeat=N)]).double()
    z = states.unsqueeze(1).expand(-1, x.shape[0], N, C)  # (9, B, N, C)
    log_q = q.log_prob(z)
    return (log_q.exp() * (model.log_joint(x, z) - log_q)).sum(0)


@pytest.fixture
def setup() -> tuple[CategoricalGaussian, Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    model = CategoricalGaussian()
    x = torch.randn(6, D, generator=g, dtype=torch.float64)
    params = torch.randn(6, N * C, generator=g, dtype=torch.float64).requires_grad_(True)
    return model, x, params


@pytest.mark.statistical
def test_straight_through_value_is_an_unbiased_elbo_estimate(setup: tuple[CategoricalGaussian, Tensor, Tensor]) -> None:
    # Mean over S = 4,000 draws per point; se = sd / sqrt(S) from the draws, tolerance 4.5 se
    # per point (6 points: failure probability below 6 * 6.8e-6 for a correct estimator).
    model, x, params = setup
    q = FAMILY(params)
    values = gumbel_terms(model, q, x, temperature=0.5, straight_through=True, num_samples=4000)
    draws = model.likelihood(relaxed_sample(q, (4000,), 0.5, True)).log_prob(x)  # the same estimator's draws
    se = draws.detach().std(0) / 4000**0.5
    assert ((values.value.detach() - exact_elbo(model, q, x).detach()).abs() < 4.5 * se).all()


def test_gradient_approaches_the_exact_one_at_low_temperature(setup: tuple[CategoricalGaussian, Tensor, Tensor]) -> None:
    # The relaxed gradient is biased; averaged over 4,000 draws it points the way of the exact
    # ELBO gradient (enumeration). Measured cosines (relaxed, straight-through): 0.95, 0.91 at
    # temperature 1; 0.993, 0.986 at 0.3; 0.997, 0.997 at 0.1; the score function 0.993.
    model, x, params = setup
    exact = torch.autograd.grad(exact_elbo(model, FAMILY(params), x).sum(), params)[0]
    for straight_through in (False, True):
        value = gumbel_terms(model, FAMILY(params), x, temperature=0.3, straight_through=straight_through, num_samples=4000)
        grad = torch.autograd.grad(value.value.sum(), params)[0]
        cosine = F.cosine_similarity(grad.flatten(), exact.flatten(), dim=0)
        assert cosine > 0.95, (straight_through, cosine)
    score = torch.autograd.grad(score_terms(model, FAMILY(params), x, num_samples=4000).value.sum(), params)[0]
    assert F.cosine_similarity(score.flatten(), exact.flatten(), dim=0) > 0.95


def test_family_and_sample_shapes(setup: tuple[CategoricalGaussian, Tensor, Tensor]) -> None:
    _, _, params = setup
    q = FAMILY(params)
    assert q.batch_shape == (6,) and q.event_shape == (N, C)
    assert FAMILY.initial_params(4).shape == (4, N * C)
    soft = relaxed_sample(q, (5,), 1.0, straight_through=False)
    assert soft.shape == (5, 6, N, C) and torch.allclose(soft.sum(-1), torch.ones(5, 6, N, dtype=torch.float64))
    hard = relaxed_sample(q, (5,), 1.0, straight_through=True)
    one_hot = hard.detach().round()  # hard + soft - soft.detach() is one-hot up to rounding
    torch.testing.assert_close(hard.detach(), one_hot, atol=1e-12, rtol=0)
    assert (one_hot.sum(-1) == 1).all()


def test_bad_input_is_a_config_error(setup: tuple[CategoricalGaussian, Tensor, Tensor]) -> None:
    model, x, params = setup
    for temperature in (0.0, -1.0):
        with pytest.raises(ConfigError, match="temperature must be positive"):
            gumbel_terms(model, FAMILY(params), x, temperature=temperature)
    with pytest.raises(ConfigError, match="needs a categorical or Bernoulli family"):
        gumbel_terms(model, Normal(torch.zeros(6, 2), 1.0), x, temperature=1.0)
    with pytest.raises(ConfigError, match="reparameterised Gaussian family"):
        stl_terms(model, FAMILY(params), x)
