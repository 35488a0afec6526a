"""Conjugate closed forms against numerical integration of the unnormalised log joint."""

from __future__ import annotations

import pytest
import torch

from avi.baselines.conjugate import BetaBernoulli, DirichletCategorical, NormalNormal
from avi.errors import ConfigError, DataError


def quadrature_moments(log_joint, grid: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log Z, mean and variance of exp(log_joint) on an even grid (rectangle rule), in float64."""
    log_p = log_joint(grid)
    log_z = torch.logsumexp(log_p, 0) + torch.log(torch.tensor(weight, dtype=torch.float64))
    p = (log_p - torch.logsumexp(log_p, 0)).exp()[:, None]
    mean = (p * grid).sum(0)
    return log_z, mean, (p * (grid - mean) ** 2).sum(0)


def test_normal_normal_matches_quadrature() -> None:
    x = torch.tensor([0.3, 1.9, 1.1, 0.7, 2.4], dtype=torch.float64)
    target = NormalNormal(x, prior_mean=0.5, prior_sd=2.0, noise_sd=0.8)
    grid = torch.linspace(-6, 8, 20001, dtype=torch.float64)[:, None]
    _, mean, var = quadrature_moments(target.log_joint, grid, float(grid[1] - grid[0]))
    posterior = target.exact_posterior()
    assert posterior.event_shape == (1,)
    torch.testing.assert_close(posterior.mean, mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(posterior.variance, var, rtol=1e-6, atol=0)


def test_beta_bernoulli_matches_quadrature() -> None:
    target = BetaBernoulli(torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 1]), a=2.0, b=3.0)
    grid = (torch.arange(200000, dtype=torch.float64)[:, None] + 0.5) / 200000  # midpoints of (0, 1)
    _, mean, var = quadrature_moments(target.log_joint, grid, 1 / 200000)
    posterior = target.exact_posterior()
    torch.testing.assert_close(posterior.mean, mean, rtol=1e-7, atol=0)
    torch.testing.assert_close(posterior.variance, var, rtol=1e-6, atol=0)
    assert posterior.mean.item() == pytest.approx((2 + 6) / (5 + 8))


def test_dirichlet_categorical_matches_quadrature_on_the_simplex() -> None:
    target = DirichletCategorical(torch.tensor([0, 2, 2, 1, 2, 0, 2]), torch.tensor([1.5, 1.0, 2.0]))
    n = 1500  # midpoints of a triangular grid over the 2-simplex (p1, p2), p3 = 1 - p1 - p2
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i + j < n - 1
    p1, p2 = (i[keep].double() + 1 / 3) / n, (j[keep].double() + 1 / 3) / n
    grid = torch.stack([p1, p2, 1 - p1 - p2], -1)
    _, mean, var = quadrature_moments(target.log_joint, grid, 1.0)
    posterior = target.exact_posterior()
    torch.testing.assert_close(posterior.mean, mean, rtol=2e-3, atol=0)
    torch.testing.assert_close(posterior.variance, var, rtol=5e-3, atol=0)


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda: BetaBernoulli(torch.tensor([0.0, 0.5])), DataError),
        (lambda: NormalNormal(torch.tensor([[1.0]])), DataError),
        (lambda: NormalNormal(torch.tensor([1.0, float("nan")])), DataError),
        (lambda: NormalNormal(torch.tensor([1.0]), prior_sd=0.0), ConfigError),
        (lambda: DirichletCategorical(torch.tensor([0, 3]), torch.ones(3)), DataError),
        (lambda: DirichletCategorical(torch.tensor([0, 1]), torch.tensor([1.0, -1.0])), ConfigError),
    ],
)
def test_bad_data_and_priors_are_one_line_errors(build, error) -> None:
    with pytest.raises(error) as info:
        build()
    assert "\n" not in str(info.value)


def test_the_documented_names_import_from_the_package() -> None:
    # README: `avi.baselines` gives exact_posterior, mh, nuts, fit_vi, compare, ... (each loaded
    # from its submodule on first use)
    import importlib

    import avi.baselines as baselines

    for name in baselines.__all__:
        home = importlib.import_module(f"avi.baselines.{baselines._SUBMODULE[name]}")
        assert getattr(baselines, name) is getattr(home, name)
    with pytest.raises(AttributeError, match="has no attribute 'exact_posterior_of'"):
        baselines.exact_posterior_of


def test_static_imports_name_what_loads_lazily() -> None:
    """Editors and type checkers read ``__all__`` and the TYPE_CHECKING imports; both must name
    exactly the lazily loaded names, each from the submodule it loads from."""
    import ast
    import inspect

    import avi.baselines as baselines

    assert baselines.__all__ == sorted(baselines._SUBMODULE)
    tree = ast.parse(inspect.getsource(baselines))
    (block,) = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    static = {alias.name: node.module for node in block.body for alias in node.names}
    assert static == {name: f"avi.baselines.{module}" for name, module in baselines._SUBMODULE.items()}
