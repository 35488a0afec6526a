"""avi: amortized variational inference for latent-variable models.

The pieces compose: a model p(x, z) (``avi.models``), a variational family (``avi.families``),
a posterior that maps (x, index) to q(z|x) (amortized: ``avi.encoders``; per-datapoint:
``avi.inference.LocalPosterior``), an objective (``avi.objectives``), and the loop that fits
them (``avi.inference.fit``); ``avi.evaluation`` scores the result.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from avi.runs.load import LoadedRun, load_run
    from avi.runs.train import run_fit

__all__ = ["LoadedRun", "__version__", "load_run", "run_fit"]

#: imported on first use (PEP 562), so that ``import avi.cli`` does not load torch before the
#: command line can answer Ctrl-C in one line (:mod:`avi.interrupts`)
_LAZY = {"LoadedRun": "avi.runs.load", "load_run": "avi.runs.load", "run_fit": "avi.runs.train"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'avi' has no attribute {name!r}")
