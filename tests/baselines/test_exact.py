"""The one way in to exact inference dispatches on what it is given."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Distribution

from avi.baselines.bayesnet import DiscreteBayesNet
from avi.baselines.conjugate import BetaBernoulli
from avi.baselines.exact import exact_posterior
from avi.baselines.regression import BayesianLogisticRegression
from avi.errors import AviError
from avi.models import LinearGaussian, VAEModel


def test_exact_posterior_of_targets_models_and_networks(generator: torch.Generator) -> None:
    beta = exact_posterior(BetaBernoulli(torch.tensor([1.0, 1, 0])))
    assert isinstance(beta, Distribution) and beta.mean.item() == pytest.approx(3 / 5)
    W = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    ppca = LinearGaussian.from_parameters(W, torch.zeros(4, dtype=torch.float64), 0.3)
    x, _ = ppca.sample(6, generator)
    posterior = exact_posterior(ppca, x)
    assert posterior.batch_shape == (6,) and posterior.event_shape == (2,)
    torch.testing.assert_close(posterior.mean, ppca.exact_posterior(x).mean)
    net = DiscreteBayesNet({"rain": ([], torch.tensor([0.2, 0.8])), "wet": (["rain"], torch.tensor([[0.9, 0.1], [0.2, 0.8]]))})
    rain = exact_posterior(net, evidence={"wet": 0})
    # Bayes: p(rain | wet) = 0.2 * 0.9 / (0.2 * 0.9 + 0.8 * 0.2) = 0.18 / 0.34
    assert rain.marginal("rain").probs[0].item() == pytest.approx(0.18 / 0.34)


def test_models_without_a_closed_form_are_one_line_errors() -> None:
    with pytest.raises(AviError, match="no closed-form posterior"):
        exact_posterior(BayesianLogisticRegression(torch.ones(2, 1), torch.tensor([0.0, 1.0])))
    with pytest.raises(AviError, match="no closed-form posterior"):
        exact_posterior(VAEModel(3, 2, likelihood="gaussian"), torch.zeros(2, 3))
    with pytest.raises(AviError, match="needs the data x"):
        exact_posterior(VAEModel(3, 2))
    with pytest.raises(AviError, match="no exact inference for a str"):
        exact_posterior("asia")
