"""PPCA and factor analysis against closed forms computed independently (numpy, Bayes' rule)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avi.errors import ConfigError, DataError
from avi.models import LinearGaussian, ppca_max_log_likelihood
from tests.closed_forms import make_ppca


def test_from_parameters_sets_the_given_parameters() -> None:
    W = torch.tensor([[1.0, 0.5], [0.0, 2.0], [-1.0, 0.3]], dtype=torch.float64)
    mu = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    ppca = LinearGaussian.from_parameters(W, mu, 0.7)
    assert ppca.noise == "isotropic" and ppca.W.dtype == torch.float64
    torch.testing.assert_close(ppca.noise_var, torch.full((3,), 0.7, dtype=torch.float64))
    torch.testing.assert_close(ppca.W.detach(), W)
    torch.testing.assert_close(ppca.mu.detach(), mu)
    psi = torch.tensor([0.1, 1.0, 25.0], dtype=torch.float64)
    fa = LinearGaussian.from_parameters(W, mu, psi)
    assert fa.noise == "diagonal"
    torch.testing.assert_close(fa.noise_var, psi)


def test_unknown_noise_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="noise model"):
        LinearGaussian(3, 1, noise="full")


def test_exact_log_marginal_is_the_gaussian_density(
    ppca: LinearGaussian, ppca_x: torch.Tensor
) -> None:
    # log N(x; mu, C) = -1/2 [D log 2 pi + log det C + r^T C^-1 r], r = x - mu, C = W W^T + s2 I
    W, mu, x = ppca.W.numpy(), ppca.mu.numpy(), ppca_x.numpy()
    C = W @ W.T + 0.5 * np.eye(5)
    r = x - mu
    expected = -0.5 * (
        5 * math.log(2 * math.pi)
        + np.linalg.slogdet(C)[1]
        + np.einsum("nd,de,ne->n", r, np.linalg.inv(C), r)
    )
    np.testing.assert_allclose(ppca.exact_log_marginal(ppca_x).numpy(), expected, rtol=1e-12)


def test_ppca_posterior_is_tipping_bishop(ppca: LinearGaussian, ppca_x: torch.Tensor) -> None:
    # p(z|x) = N(M^-1 W^T (x - mu), s2 M^-1), M = W^T W + s2 I (Tipping and Bishop 1999)
    W, s2 = ppca.W, 0.5
    M = W.T @ W + s2 * torch.eye(2, dtype=torch.float64)
    post = ppca.exact_posterior(ppca_x)
    torch.testing.assert_close(post.mean, torch.linalg.solve(M, W.T @ (ppca_x - ppca.mu).T).T)
    torch.testing.assert_close(post.covariance_matrix, (s2 * torch.linalg.inv(M)).expand(50, 2, 2))


def test_exact_posterior_satisfies_bayes_rule(ppca: LinearGaussian, ppca_x: torch.Tensor) -> None:
    # log p(z|x) = log p(x, z) - log p(x) for every z, not only at the mode
    z = torch.randn(7, 50, 2, dtype=torch.float64) * 2
    lhs = ppca.exact_posterior(ppca_x).log_prob(z)
    rhs = ppca.log_joint(ppca_x, z) - ppca.exact_log_marginal(ppca_x)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_factor_analysis_posterior_is_gaussian_conditioning() -> None:
    # Brute force on the joint: (z, x) ~ N((0, mu), [[I, W^T], [W, W W^T + Psi]]), so
    # z | x ~ N(W^T C^-1 (x - mu), I - W^T C^-1 W) with C = W W^T + Psi.
    psi = torch.tensor([0.05, 0.3, 1.0, 2.0, 4.0], dtype=torch.float64)
    fa = make_ppca(psi)
    assert fa.noise == "diagonal"
    x, _ = fa.sample(20, torch.Generator().manual_seed(2))
    W, mu, xs = fa.W.numpy(), fa.mu.numpy(), x.numpy()
    joint = np.block([[np.eye(2), W.T], [W, W @ W.T + np.diag(psi.numpy())]])
    s_zx, s_xx = joint[:2, 2:], joint[2:, 2:]
    mean = (s_zx @ np.linalg.solve(s_xx, (xs - mu).T)).T
    cov = joint[:2, :2] - s_zx @ np.linalg.solve(s_xx, s_zx.T)
    post = fa.exact_posterior(x)
    np.testing.assert_allclose(post.mean.numpy(), mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        post.covariance_matrix.numpy(), np.broadcast_to(cov, (20, 2, 2)), rtol=1e-10, atol=1e-12
    )
    # the marginal of the joint too
    np.testing.assert_allclose(fa.marginal().covariance_matrix.numpy(), s_xx, rtol=1e-12)


@pytest.mark.statistical
def test_sample_moments_match_the_marginal(ppca: LinearGaussian) -> None:
    # The sample mean of n draws has standard error sqrt(C_dd / n) per coordinate; 4 standard
    # errors over 5 coordinates bounds the false-alarm probability by 5 * 6e-5.
    n = 20_000
    x, z = ppca.sample(n, torch.Generator().manual_seed(3))
    assert x.shape == (n, 5) and z.shape == (n, 2) and x.dtype == torch.float64
    C = ppca.marginal().covariance_matrix
    se = (torch.diagonal(C) / n).sqrt()
    assert ((x.mean(0) - ppca.mu).abs() < 4 * se).all()
    # sample covariance entries: Var(x_i x_j) <= C_ii C_jj + C_ij^2 for a Gaussian, so the
    # standard error of each entry is at most sqrt((C_ii C_jj + C_ij^2) / n)
    se_cov = ((torch.outer(torch.diagonal(C), torch.diagonal(C)) + C**2) / n).sqrt()
    assert ((torch.cov(x.T) - C).abs() < 4 * se_cov).all()


def _explicit_ml_solution(x: torch.Tensor, k: int) -> LinearGaussian:
    """Tipping and Bishop's ML PPCA: mu = mean, W = U_K (L_K - s2 I)^1/2, s2 = mean of the rest."""
    xs = x.numpy()
    cov = np.cov(xs.T, bias=True)
    eig, vec = np.linalg.eigh(cov)
    eig, vec = eig[::-1], vec[:, ::-1]
    s2 = eig[k:].mean()
    W = vec[:, :k] * np.sqrt(eig[:k] - s2)
    return LinearGaussian.from_parameters(
        torch.from_numpy(W.copy()), torch.from_numpy(xs.mean(0)), float(s2)
    )


def test_ppca_max_log_likelihood_is_the_likelihood_of_the_ml_solution(ppca: LinearGaussian) -> None:
    x, _ = ppca.sample(400, torch.Generator().manual_seed(4))
    ml = _explicit_ml_solution(x, 2)
    mean_ll = ml.exact_log_marginal(x).mean()
    torch.testing.assert_close(
        ppca_max_log_likelihood(x, 2), mean_ll.detach(), rtol=1e-10, atol=1e-10
    )
    # ... and it is a maximum: the gradient vanishes there and the true parameters do worse
    mean_ll.backward()
    for p in ml.parameters():
        assert p.grad.abs().max() < 1e-8
    assert ppca.exact_log_marginal(x).mean() < mean_ll - 1e-3


def test_from_parameters_builds_the_model_on_the_parameters_device() -> None:
    # the meta device stands in for a GPU: the model was built on the CPU whatever W's device
    W = torch.ones(3, 2, device="meta")
    model = LinearGaussian.from_parameters(W, torch.zeros(3, device="meta"), 0.5)
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_ppca_max_log_likelihood_with_as_many_latents_as_dimensions(ppca: LinearGaussian) -> None:
    # K >= D: no noise directions are left, the maximum is the full-covariance Gaussian's at the
    # sample mean and covariance (it was NaN: the mean of no remaining eigenvalues)
    x, _ = ppca.sample(400, torch.Generator().manual_seed(4))
    centred = x - x.mean(0)
    gaussian = torch.distributions.MultivariateNormal(x.mean(0), centred.T @ centred / len(x))
    expected = gaussian.log_prob(x).mean()
    for latent_dim in (x.shape[1], x.shape[1] + 2):
        torch.testing.assert_close(ppca_max_log_likelihood(x, latent_dim), expected, rtol=1e-10, atol=1e-10)


def test_check_data_accepts_good_data(ppca: LinearGaussian, ppca_x: torch.Tensor) -> None:
    ppca.check_data(ppca_x)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.tensor([[0.0, 1.0, float("nan"), 0.0, 0.0]]), "NaN or infinite"),
        (torch.tensor([[0.0, float("inf"), 0.0, 0.0, 0.0]]), "NaN or infinite"),
        (torch.zeros(3, 4), "dimension 4 but the model expects 5"),
        (torch.zeros(5), "2-D"),
        (torch.zeros(2, 3, 5), "2-D"),
    ],
)
def test_check_data_names_the_problem(
    ppca: LinearGaussian, bad: torch.Tensor, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        ppca.check_data(bad, name="train")
