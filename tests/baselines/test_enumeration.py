"""Enumeration against a posterior worked out by hand, and the CategoricalTable distribution."""

from __future__ import annotations

import pytest
import torch

from avi.baselines.enumeration import CategoricalTable, enumerate_posterior
from avi.errors import AviError


def test_enumeration_matches_bayes_rule_by_hand() -> None:
    # Two independent coins z1 ~ Bern(0.3), z2 ~ Bern(0.6); we observe y = z1 OR z2 = 1, which
    # has probability 1 - 0.7 * 0.4 = 0.72, and p(z1, z2 | y) = p(z1) p(z2) / 0.72 unless both are 0.
    prior = torch.tensor([[0.7 * 0.4, 0.7 * 0.6], [0.3 * 0.4, 0.3 * 0.6]], dtype=torch.float64)

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        observed = ((z[:, 0] + z[:, 1]) > 0).double()
        return prior[z[:, 0], z[:, 1]].log() + observed.log()

    posterior = enumerate_posterior(log_joint, [2, 2], ["z1", "z2"])
    expected = prior.clone()
    expected[0, 0] = 0
    torch.testing.assert_close(posterior.probs, expected / 0.72)
    assert posterior.log_normalizer.item() == pytest.approx(torch.log(torch.tensor(0.72)).item())
    torch.testing.assert_close(posterior.marginal("z1").probs, torch.tensor([0.42, 0.30], dtype=torch.float64) / 0.72)


def test_categorical_table_scores_samples_and_moments() -> None:
    probs = torch.tensor([[0.1, 0.2, 0.3], [0.05, 0.15, 0.2]], dtype=torch.float64)
    table = CategoricalTable(probs, ["a", "b"])
    assert table.event_shape == (2,)
    torch.testing.assert_close(table.log_prob(torch.tensor([[1, 2], [0, 0]])), probs[[1, 0], [2, 0]].log())
    draws = table.sample((4000,))
    assert draws.shape == (4000, 2)
    # frequency of (0, 2): binomial standard error sqrt(0.3 * 0.7 / 4000) = 0.0072; 4 of them
    assert ((draws == torch.tensor([0, 2])).all(-1).double().mean().item()) == pytest.approx(0.3, abs=0.029)
    # marginals: a = (0.6, 0.4), b = (0.15, 0.35, 0.5); means of the codes 0.4 and 0.35 + 2 * 0.5
    torch.testing.assert_close(table.mean, torch.tensor([0.4, 1.35], dtype=torch.float64))
    torch.testing.assert_close(table.variance, torch.tensor([0.24, 0.35 + 4 * 0.5 - 1.35**2], dtype=torch.float64))


def test_enumeration_refuses_a_space_too_large_or_impossible() -> None:
    with pytest.raises(AviError, match="too large"):
        enumerate_posterior(lambda z: torch.zeros(z.shape[0]), [2] * 30)
    with pytest.raises(AviError, match="zero probability"):
        enumerate_posterior(lambda z: torch.full((z.shape[0],), -torch.inf), [2, 2])
