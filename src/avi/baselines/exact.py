"""One way in to exact inference: the closed-form or enumerated posterior of whatever model has one.

:func:`exact_posterior` returns a torch ``Distribution``, so an exact posterior is scored,
sampled and compared exactly as a variational one is:

- a :class:`~avi.baselines.targets.Target` (Bayesian linear regression, the conjugate pairs):
  its closed form, batch shape ``target.batch_shape``, event (K,);
- a :class:`~avi.models.LatentVariableModel` with an exact posterior (PPCA, factor analysis)
  and data x (B, D): p(z_i | x_i), batch (B,), event (K,);
- a :class:`~avi.baselines.bayesnet.DiscreteBayesNet` or a pgmpy network with evidence:
  the posterior of the free variables, its joint table by enumeration, or every variable's
  exact marginal by variable elimination or the junction tree
  (:func:`~avi.baselines.bayesnet.network_posterior`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.distributions import Distribution

from avi.baselines.targets import LocalTarget, Target
from avi.errors import AviError
from avi.models.base import LatentVariableModel

__all__ = ["exact_posterior"]


def exact_posterior(
    model: Any, x: Tensor | None = None, *, evidence: Mapping[str, str | int] | None = None, method: str = "enumeration"
) -> Distribution:
    """The exact posterior of ``model`` (see the module docstring); a one-line
    :class:`~avi.errors.AviError` when the model has none."""
    if isinstance(model, Target):
        return model.exact_posterior()
    if isinstance(model, LatentVariableModel):
        if x is None:
            raise AviError("the posterior of a latent-variable model needs the data x (B, D)")
        return LocalTarget(model, x).exact_posterior()
    from avi.baselines.bayesnet import DiscreteBayesNet, network_posterior

    if isinstance(model, DiscreteBayesNet) or hasattr(model, "get_cpds"):
        return network_posterior(model, evidence, method=method)
    raise AviError(
        f"no exact inference for a {type(model).__name__}; give a Target, a LatentVariableModel or a Bayesian network"
    )
