"""The MADE decoder: autoregressive by construction, a normalised distribution over {0, 1}^D,
sampling that follows its log_prob."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from avi.errors import ConfigError
from avi.families import make_family
from avi.models.made import MADE, MADEModel
from avi.objectives import elbo_terms, iwae_terms


def _randomised(made: MADE) -> MADE:
    """Non-zero weights everywhere a mask allows (default init can leave some paths tiny)."""
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 0.7)
    return made


@pytest.mark.parametrize("hidden", [[7], [9, 6]])
def test_logit_d_depends_on_earlier_inputs_only_and_on_all_of_z(hidden: list[int]) -> None:
    made = _randomised(MADE(5, 2, hidden)).double()
    x = torch.bernoulli(torch.full((5,), 0.5, dtype=torch.float64))
    z = torch.randn(2, dtype=torch.float64)
    jac_x = torch.autograd.functional.jacobian(lambda v: made(v, z), x)  # (out d, in j)
    assert (jac_x.triu() == 0).all()  # d logit_d / d x_j = 0 for j >= d
    assert (jac_x.tril(-1)[1:, 0] != 0).all()  # x_1 reaches every later output
    jac_z = torch.autograd.functional.jacobian(lambda c: made(x, c), z)
    assert (jac_z != 0).all()


def test_likelihood_is_normalised_and_broadcasts_over_samples() -> None:
    model = MADEModel(4, 2, [8]).double()
    _randomised(model.decoder)
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)  # (16, 4)
    z = torch.randn(3, 1, 2, dtype=torch.float64).expand(3, 16, 2)
    log_p = model.likelihood(z).log_prob(xs)  # (3, 16): every x under each of 3 z's
    assert log_p.shape == (3, 16)
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(3, dtype=torch.float64))


@pytest.mark.statistical
def test_samples_follow_log_prob() -> None:
    model = MADEModel(3, 1, [6]).double()
    _randomised(model.decoder)
    z = torch.tensor([[0.3]], dtype=torch.float64)
    n = 40_000
    x = model.likelihood(z).sample((n,), generator=torch.Generator().manual_seed(4)).reshape(n, 3)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    p = model.likelihood(z.expand(8, 1)).log_prob(xs).exp()
    freq = (x[:, None, :] == xs[None]).all(-1).double().mean(0)
    se = (p * (1 - p) / n).sqrt()  # binomial standard error of each frequency
    assert ((freq - p).abs() <= 4 * se + 1e-12).all()


def test_made_vae_trains_with_the_bounds_and_samples_binary_data() -> None:
    model = MADEModel(6, 2, [10])
    family = make_family("mean-field", 2)
    q = family(torch.randn(4, family.param_size))
    x = torch.bernoulli(torch.full((4, 6), 0.3))
    model.check_data(x)
    terms = elbo_terms(model, q, x, num_samples=3, analytic_kl=True)
    assert terms.value.shape == (4,)
    terms.value.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert iwae_terms(model, q, x, k=5).value.shape == (4,)
    data, z = model.sample(7, torch.Generator().manual_seed(0))
    assert data.shape == (7, 6) and z.shape == (7, 2) and set(data.unique().tolist()) <= {0.0, 1.0}
    assert math.isfinite(model.likelihood(z).log_prob(data).sum().item())


@pytest.mark.parametrize(("args", "message"), [((1, 2, [4]), "data dimension"), ((5, 2, []), "hidden"),
                                               ((5, 2, [4], "swish"), "activation")])  # fmt: skip
def test_bad_made_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MADE(*args)
