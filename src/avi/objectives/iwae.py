"""The IWAE bound as an objective value (Burda et al. 2016), with its gradient estimators:
``reparam``, ``vimco`` (Mnih and Rezende 2016: score-function gradients with leave-one-out
baselines, for discrete q) and ``dreg`` (Tucker et al. 2019: doubly reparameterised)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor
from torch.distributions import Distribution

from avi.errors import ConfigError
from avi.models.base import LatentVariableModel
from avi.objectives.bounds import Terms, check_count, iwae_terms
from avi.objectives.estimators import dreg_terms, vimco_terms
from avi.objectives.objective import Stateless

__all__ = ["IWAE"]


@dataclass(frozen=True)
class IWAE(Stateless):
    """L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i)] with ``k`` samples per point (vimco: k >= 2).

    Example:
        >>> IWAE(k=5, estimator="dreg").needs_gaussian
        True
    """

    name: ClassVar[str] = "iwae"
    estimators: ClassVar[tuple[str, ...]] = ("reparam", "vimco", "dreg")

    k: int = 5
    estimator: str = "reparam"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("k", self.k)
        if self.estimator == "vimco" and self.k < 2:
            raise ConfigError(f"vimco needs k >= 2 samples per point, got {self.k}")

    def terms(self, model: LatentVariableModel, q: Distribution, x: Tensor) -> Terms:
        terms = {"reparam": iwae_terms, "vimco": vimco_terms, "dreg": dreg_terms}[self.estimator]
        return terms(model, q, x, k=self.k)

    @property
    def reparameterised(self) -> bool:
        return self.estimator != "vimco"

    @property
    def needs_gaussian(self) -> bool:
        return self.estimator == "dreg"
