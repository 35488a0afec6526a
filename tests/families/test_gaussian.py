"""Gaussian families: the parameter layout, its inverse, and the starting point."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal

from avi.errors import ConfigError
from avi.families import FullRankGaussian, MeanFieldGaussian, inverse_softplus, make_family
from tests.closed_forms import gaussian_moments

FAMILIES = ["mean-field", "full-rank"]


def test_param_sizes() -> None:
    assert make_family("mean-field", 3).param_size == 6
    assert make_family("full-rank", 3).param_size == 3 + 6
    assert isinstance(make_family("full-rank", 3), FullRankGaussian)
    assert isinstance(make_family("mean-field", 3), MeanFieldGaussian)


def test_unknown_family_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="variational family"):
        make_family("flow", 2)


def test_inverse_softplus() -> None:
    y = torch.tensor([1e-6, 0.1, 1.0, 5.0, 19.0], dtype=torch.float64)
    torch.testing.assert_close(F.softplus(inverse_softplus(y)), y, rtol=1e-12, atol=0)


def test_full_rank_layout() -> None:
    # lambda = (m, raw diagonal, strictly-lower entries row by row): L[1,0], L[2,0], L[2,1]
    params = torch.tensor([[1.0, 2.0, 3.0, 0.1, 0.2, 0.3, 4.0, 5.0, 6.0]], dtype=torch.float64)
    q = FullRankGaussian(3)(params)
    diag = F.softplus(params[0, 3:6])
    L = torch.tensor(
        [[diag[0], 0.0, 0.0], [4.0, diag[1], 0.0], [5.0, 6.0, diag[2]]], dtype=torch.float64
    )
    torch.testing.assert_close(q.loc[0], params[0, :3])
    torch.testing.assert_close(q.covariance_matrix[0], L @ L.T)


def test_mean_field_layout() -> None:
    params = torch.tensor([[1.0, -2.0, 0.5, -3.0]], dtype=torch.float64)
    q = MeanFieldGaussian(2)(params)
    torch.testing.assert_close(q.mean[0], params[0, :2])
    torch.testing.assert_close(q.stddev[0], F.softplus(params[0, 2:]))
    assert q.batch_shape == (1,) and q.event_shape == (2,)


@pytest.mark.parametrize("name", FAMILIES)
def test_params_of_inverts_call(name: str) -> None:
    family = make_family(name, 3)
    params = 2 * torch.randn(10, family.param_size, dtype=torch.float64)
    q = family(params)
    assert q.batch_shape == (10,) and q.event_shape == (3,)
    torch.testing.assert_close(family.params_of(q), params, rtol=1e-9, atol=1e-9)


def test_full_rank_params_of_a_foreign_distribution() -> None:
    # q built by torch from a covariance matrix: params_of then __call__ gives q back
    A = torch.randn(4, 3, 3, dtype=torch.float64)
    cov = A @ A.mT + 0.1 * torch.eye(3, dtype=torch.float64)
    q = MultivariateNormal(torch.randn(4, 3, dtype=torch.float64), covariance_matrix=cov)
    family = FullRankGaussian(3)
    mean, covariance = gaussian_moments(family(family.params_of(q)))
    torch.testing.assert_close(mean, q.loc)
    torch.testing.assert_close(covariance, cov)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_initial_params_give_isotropic_gaussian(name: str, scale: float) -> None:
    family = make_family(name, 3)
    params = family.initial_params(7, scale)
    assert params.shape == (7, family.param_size)
    mean, cov = gaussian_moments(family(params))
    torch.testing.assert_close(mean, torch.zeros(7, 3))
    torch.testing.assert_close(cov, (scale**2 * torch.eye(3)).expand(7, 3, 3))


@pytest.mark.statistical
@pytest.mark.parametrize("name", FAMILIES)
def test_samples_have_the_family_moments(name: str) -> None:
    # Each coordinate of the sample mean of n draws has standard error sqrt(S_kk / n); with 3
    # coordinates and a 4-standard-error tolerance the false-alarm rate is below 2e-4.
    family = make_family(name, 3)
    params = torch.randn(1, family.param_size, dtype=torch.float64)
    q = family(params)
    mean, cov = gaussian_moments(q)
    n = 50_000
    z = q.sample((n,))[:, 0]
    assert ((z.mean(0) - mean[0]).abs() < 4 * (torch.diagonal(cov[0]) / n).sqrt()).all()
    # Var of a sample covariance entry is (S_ii S_jj + S_ij^2) / n for Gaussian draws
    se_cov = (
        (torch.outer(torch.diagonal(cov[0]), torch.diagonal(cov[0])) + cov[0] ** 2) / n
    ).sqrt()
    assert ((torch.cov(z.T) - cov[0]).abs() < 4 * se_cov).all()
