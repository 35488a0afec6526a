"""Models with discrete latents, the Bernoulli family and exact bounds by enumeration."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.distributions import Bernoulli, Independent, kl_divergence

from avi.errors import ConfigError
from avi.evaluation import elbo_per_point, enumerated_bounds, log_likelihood
from avi.families.discrete import BernoulliFamily, CategoricalFamily, relaxed_sample
from avi.models import CategoricalVAE, GaussianMixture, SigmoidBeliefNet
from avi.models.discrete import BroadcastBernoulli
from avi.objectives import elbo_terms


def all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=torch.float64)


@pytest.mark.parametrize(
    "make",
    [lambda: SigmoidBeliefNet(4, 3, hidden=(5,)), lambda: CategoricalVAE(4, 2, 3, hidden=(5,))],
    ids=["sbn", "discrete-vae"],
)
def test_enumerated_marginal_sums_to_one_over_all_data(make) -> None:
    model = make().double()  # built inside the test, after the seed fixture
    # sum over the 16 binary x of p(x) = sum_x sum_z p(x, z) = 1: checks log_joint and the states
    x = all_binary(4)
    q = (BernoulliFamily(3) if isinstance(model, SigmoidBeliefNet) else CategoricalFamily(2, 3))(
        torch.randn(16, model.latent_dim, dtype=torch.float64)
    )
    bounds = enumerated_bounds(model, q, x)
    torch.testing.assert_close(torch.logsumexp(bounds.log_marginal, 0), torch.zeros((), dtype=torch.float64))
    assert (bounds.kl > 0).all() and (bounds.elbo < bounds.log_marginal).all()


def test_mixture_exact_forms_agree_with_enumeration() -> None:
    model = GaussianMixture(3, 4).double()
    x, z = model.sample(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 3) and z.shape == (7, 1, 4) and (z.sum(-1) == 1).all()
    posterior = model.exact_posterior(x)
    bounds = enumerated_bounds(model, posterior, x)
    torch.testing.assert_close(bounds.log_marginal, model.exact_log_marginal(x))
    torch.testing.assert_close(bounds.kl, torch.zeros(7, dtype=torch.float64), atol=1e-12, rtol=0)  # q = p(z|x)
    # relaxed z (a point of the simplex) gives the mixture of the means as the likelihood's mean
    relaxed = torch.full((1, 4), 0.25, dtype=torch.float64)
    torch.testing.assert_close(model.likelihood(relaxed).mean, model.means.mean(0))


@pytest.mark.statistical
def test_mixture_samples_follow_the_weights() -> None:
    # 20,000 assignments; each frequency has se = sqrt(p (1 - p) / n) <= 0.0036: 4.5 se = 0.016
    model = GaussianMixture.from_parameters(torch.zeros(3, 2), torch.tensor([0.0, 1.0, -1.0]), 1.0)
    _, z = model.sample(20_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.squeeze(1).mean(0), torch.softmax(model.logits.detach(), 0), atol=0.016, rtol=0)


def test_broadcast_bernoulli_kl_matches_torch_where_torch_works() -> None:
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ours = kl_divergence(Bernoulli(logits=a), BroadcastBernoulli(logits=b))
    torch.testing.assert_close(ours, kl_divergence(Bernoulli(logits=a), Bernoulli(logits=b.expand(5, 3))))
    prior = SigmoidBeliefNet(6, 3).double().prior()
    assert kl_divergence(BernoulliFamily(3)(a), prior).shape == (5,)


@pytest.mark.statistical
def test_relaxed_bernoulli_straight_through_is_a_sample_of_q() -> None:
    # 20,000 hard samples per unit: the mean of each is within 4.5 se (se <= 0.0036) of sigmoid(lambda)
    logits = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    q = BernoulliFamily(3)(logits)
    z = relaxed_sample(q, (20_000,), temperature=0.5, straight_through=True)
    torch.testing.assert_close(z.detach(), z.detach().round(), atol=1e-12, rtol=0)  # binary, up to rounding
    torch.testing.assert_close(z.detach().mean(0), torch.sigmoid(logits.detach()), atol=0.016, rtol=0)
    z.sum().backward()  # the relaxed sample's gradient reaches the logits
    assert logits.grad is not None and (logits.grad > 0).all()
    soft = relaxed_sample(q, (100,), temperature=0.5, straight_through=False)
    assert ((soft > 0) & (soft < 1)).all()


def test_bernoulli_family_shapes_and_sampling() -> None:
    family = BernoulliFamily(4)
    q = family(family.initial_params(3))
    assert isinstance(q, Independent) and q.batch_shape == (3,) and q.event_shape == (4,)
    torch.testing.assert_close(q.mean, torch.full((3, 4), 0.5))
    assert not q.has_rsample


def test_too_many_states_is_one_line() -> None:
    with pytest.raises(ConfigError, match="too many to enumerate"):
        CategoricalVAE(10, 20, 10).latent_states()
    with pytest.raises(ConfigError, match="at least 2 components"):
        GaussianMixture(2, 1)


class _Fixed(torch.nn.Module):
    """A posterior module that returns a given q whatever the batch (for evaluation functions)."""

    def __init__(self, make: object) -> None:
        super().__init__()
        self.make = make

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> object:
        return self.make(x)  # type: ignore[operator]


def test_log_likelihood_and_elbo_accept_a_discrete_q() -> None:
    # with q = p(z|x) every importance weight equals p(x): IWAE is log p(x) exactly, with zero
    # standard error, and the ELBO (exact categorical KL) is log p(x) up to its sampled
    # reconstruction term
    model = GaussianMixture(2, 3).double()
    x, _ = model.sample(20, torch.Generator().manual_seed(0))
    exact = _Fixed(model.exact_posterior)
    ll = log_likelihood(model, exact, x, k=50, chunk_size=20)
    torch.testing.assert_close(ll.value, model.exact_log_marginal(x).detach())
    assert ll.stderr.max().item() < 1e-6
    # with a uniform q the estimate is unbiased in the limit: k = 4,000 over 3 states puts it
    # within 4.5 delta-method standard errors of log p(x) (plus the O(1/k) bias, below 1e-3 here)
    uniform = _Fixed(lambda x: CategoricalFamily(1, 3)(torch.zeros(x.shape[0], 3, dtype=torch.float64)))
    ll = log_likelihood(model, uniform, x, k=4000, chunk_size=1000)
    assert ((ll.value - model.exact_log_marginal(x)).abs() < 4.5 * ll.stderr + 1e-3).all()
    _, _, kl = elbo_per_point(model, uniform, x, num_samples=10)
    expected = kl_divergence(uniform(x), model.prior())  # the same for every point: (20,)
    torch.testing.assert_close(kl, expected.detach())


def test_reparameterised_bound_on_a_discrete_q_is_one_line() -> None:
    model = GaussianMixture(2, 3)
    q = CategoricalFamily(1, 3)(torch.zeros(4, 3, requires_grad=True))
    with pytest.raises(ConfigError, match="reparameterised estimator asked for a discrete family"):
        elbo_terms(model, q, torch.zeros(4, 2))
