"""The generative-model interface: p(x, z) = p(z) p(x | z)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from avi.errors import ConfigError, DataError

__all__ = ["LatentVariableModel", "as_model"]


class LatentVariableModel(nn.Module):
    """A model p(x, z) = p(z) p(x|z) with a vector latent z in R^K and data x in R^D.

    Subclasses define :meth:`prior` and :meth:`likelihood`; :meth:`log_joint` and :meth:`sample`
    follow. Models with a tractable marginal also define ``exact_log_marginal(x)`` and
    ``exact_posterior(x)``.
    """

    data_dim: int
    latent_dim: int
    #: whether the likelihood is over {0, 1}^D (data is checked to be binary)
    binary_data: bool = False

    def prior(self) -> Distribution:
        """p(z): batch shape (), event shape (K,)."""
        raise NotImplementedError

    def likelihood(self, z: Tensor) -> Distribution:
        """p(x | z) for z of shape (..., K): batch shape (...), event shape (D,)."""
        raise NotImplementedError

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z) = log p(z) + log p(x | z) for x: (B, D), z: (S, B, K) -> (S, B)."""
        return self.prior().log_prob(z) + self.likelihood(z).log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw n pairs (x, z) from the joint: x (n, D), z (n, K)."""
        prior = self.prior()
        eps = torch.randn(n, self.latent_dim, generator=generator, dtype=prior.mean.dtype, device=prior.mean.device)
        z = prior.mean + eps * prior.stddev
        return self.sample_data(z, generator), z

    def sample_data(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw x ~ p(x | z) using an explicit generator."""
        raise NotImplementedError

    def check_data(self, x: Tensor, name: str = "data") -> None:
        """Raise :class:`DataError` naming the problem if x cannot be scored by this model."""
        if x.ndim != 2:
            raise DataError(f"{name} must be a 2-D array (points, {self.data_dim}), got shape {tuple(x.shape)}")
        if x.shape[1] != self.data_dim:
            raise DataError(f"{name} has dimension {x.shape[1]} but the model expects {self.data_dim}")
        if not torch.isfinite(x).all():
            raise DataError(f"{name} contains NaN or infinite values")
        if self.binary_data and not ((x == 0) | (x == 1)).all():
            raise DataError(
                f"{name} is not binary but the model has a Bernoulli likelihood "
                "(binarise it: data.binarize = 'dynamic' or 'static')"
            )


class _Adapted(LatentVariableModel):
    """A module with ``prior()``, ``likelihood(z)``, ``data_dim`` and ``latent_dim`` (and, where it
    has them, ``sample_data``, ``exact_log_marginal``, ``exact_posterior``) as a
    :class:`LatentVariableModel`: ``log_joint``, ``sample`` and ``check_data`` come from the base."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.data_dim, self.latent_dim = int(module.data_dim), int(module.latent_dim)  # type: ignore[arg-type]
        self.binary_data = bool(getattr(module, "binary_data", False))
        for name in ("sample_data", "exact_log_marginal", "exact_posterior"):
            if hasattr(module, name):
                setattr(self, name, getattr(module, name))

    def prior(self) -> Distribution:
        return self.module.prior()  # type: ignore[operator]

    def likelihood(self, z: Tensor) -> Distribution:
        return self.module.likelihood(z)  # type: ignore[operator]


#: what a model must have: the two distributions and the two sizes
REQUIRED = ("prior", "likelihood", "data_dim", "latent_dim")


def as_model(module: nn.Module) -> LatentVariableModel:
    """``module`` as a :class:`LatentVariableModel`: itself if it is one, else adapted (see
    :class:`_Adapted`); a :class:`ConfigError` naming what it lacks otherwise."""
    if isinstance(module, LatentVariableModel):
        return module
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if not isinstance(module, nn.Module) or missing:
        what = "is not a torch.nn.Module" if not isinstance(module, nn.Module) else f"has no {', '.join(missing)}"
        raise ConfigError(
            f"model {type(module).__name__} {what}; a model needs prior(), likelihood(z), data_dim and latent_dim"
        )
    return _Adapted(module)
