"""Reference points for variational posteriors: exact inference and MCMC (extras:
``pip install -e ".[baselines]"``).

The names below are importable from ``avi.baselines`` and load their submodule on first use
(PEP 562), so that one of them does not import the extras another needs (pgmpy for Bayesian
networks, Pyro and ArviZ for NUTS). The speed-against-accuracy comparison is
``avi.baselines.compare.compare`` (the submodule has the name)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_SUBMODULE = {
    "exact_posterior": "exact",
    "enumerate_posterior": "enumeration",
    "DiscreteBayesNet": "bayesnet",
    "mean_field": "bayesnet",
    "ProductCategorical": "bayesnet",
    "Target": "targets",
    "LocalTarget": "targets",
    "mh": "mcmc",
    "gibbs": "mcmc",
    "nuts": "mcmc",
    "Samples": "mcmc",
    "fit_vi": "vi",
    "NormalNormal": "conjugate",
    "BetaBernoulli": "conjugate",
    "DirichletCategorical": "conjugate",
    "BayesianLinearRegression": "regression",
    "BayesianLogisticRegression": "regression",
}

__all__ = [
    "BayesianLinearRegression",
    "BayesianLogisticRegression",
    "BetaBernoulli",
    "DirichletCategorical",
    "DiscreteBayesNet",
    "LocalTarget",
    "NormalNormal",
    "ProductCategorical",
    "Samples",
    "Target",
    "enumerate_posterior",
    "exact_posterior",
    "fit_vi",
    "gibbs",
    "mean_field",
    "mh",
    "nuts",
]

if TYPE_CHECKING:  # what static analysers and editors see; at run time __getattr__ loads on first use
    from avi.baselines.bayesnet import DiscreteBayesNet, ProductCategorical, mean_field
    from avi.baselines.conjugate import BetaBernoulli, DirichletCategorical, NormalNormal
    from avi.baselines.enumeration import enumerate_posterior
    from avi.baselines.exact import exact_posterior
    from avi.baselines.mcmc import Samples, gibbs, mh, nuts
    from avi.baselines.regression import BayesianLinearRegression, BayesianLogisticRegression
    from avi.baselines.targets import LocalTarget, Target
    from avi.baselines.vi import fit_vi


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE:
        raise AttributeError(f"module 'avi.baselines' has no attribute {name!r}")
    return getattr(import_module(f"avi.baselines.{_SUBMODULE[name]}"), name)
