"""avi: amortized variational inference for latent-variable models.

The pieces compose: a model p(x, z) (``avi.models``), a variational family (``avi.families``),
a posterior that maps (x, index) to q(z|x) (amortized: ``avi.encoders``; per-datapoint:
``avi.inference.LocalPosterior``), an objective (``avi.objectives``), and the loop that fits
them (``avi.inference.fit``); ``avi.evaluation`` scores the result.
"""

__version__ = "0.1.0"

from avi.runs.load import LoadedRun, load_run
from avi.runs.train import run_fit

__all__ = ["LoadedRun", "__version__", "load_run", "run_fit"]
