"""Bayesian regressions: the exact linear-regression posterior against quadrature, log joints
against torch.distributions, and the breast-cancer loader."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from avi.baselines.regression import BayesianLinearRegression, BayesianLogisticRegression, breast_cancer, synthetic_regression
from avi.errors import DataError


def test_linear_regression_posterior_matches_two_dimensional_quadrature(generator: torch.Generator) -> None:
    X, y = synthetic_regression(15, 2, generator, correlation=0.7)
    target = BayesianLinearRegression(X, y, prior_sd=1.5, noise_sd=0.7)
    exact = target.exact_posterior()
    axes = [torch.linspace(m - 8 * s, m + 8 * s, 801, dtype=torch.float64) for m, s in zip(exact.mean.tolist(), exact.stddev.tolist())]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    p = torch.softmax(target.log_joint(grid), 0)[:, None]
    mean = (p * grid).sum(0)
    centred = grid - mean
    cov = (p * centred).T @ centred
    torch.testing.assert_close(exact.mean, mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(exact.covariance_matrix, cov, rtol=1e-4, atol=1e-8)


def test_log_joints_match_torch_distributions(generator: torch.Generator) -> None:
    X, y = synthetic_regression(20, 3, generator)
    w = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    linear = BayesianLinearRegression(X, y, prior_sd=2.0, noise_sd=0.5)
    expected = Normal(0.0, 2.0).log_prob(w).sum(-1) + Normal(w @ X.T, 0.5).log_prob(y).sum(-1)
    torch.testing.assert_close(linear.log_joint(w), expected)
    labels = (y > 0).double()
    logistic = BayesianLogisticRegression(X, labels, prior_sd=2.0)
    expected = Normal(0.0, 2.0).log_prob(w).sum(-1) + Bernoulli(logits=w @ X.T).log_prob(labels).sum(-1)
    torch.testing.assert_close(logistic.log_joint(w), expected)


def test_breast_cancer_is_standardised_with_an_intercept() -> None:
    pytest.importorskip("sklearn")
    X, y = breast_cancer()
    assert X.shape == (569, 31) and y.shape == (569,)
    torch.testing.assert_close(X[:, 0], torch.ones(569, dtype=torch.float64))
    torch.testing.assert_close(X[:, 1:].mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-10, rtol=0)
    assert set(y.tolist()) == {0.0, 1.0}


def test_bad_regression_data_is_a_one_line_error() -> None:
    with pytest.raises(DataError, match="labels must be 0 or 1"):
        BayesianLogisticRegression(torch.ones(3, 2), torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(DataError, match=r"X \(N, D\) and y \(N,\)"):
        BayesianLinearRegression(torch.ones(3, 2), torch.ones(4))
