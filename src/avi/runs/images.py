"""What a run draws as images, where its data are square images (MNIST's 28 x 28 = 784).

Reconstructions E[x | z = E_q[z]] of inputs beside those inputs, and decoded draws E[x | z],
z ~ p(z), as tensors of shape (N, 1, side, side) in [0, 1]: the TensorBoard tracker writes them
every epoch. A model whose likelihood has no mean gives one draw x ~ p(x | z) instead (its
``sample_data``); one with neither draws nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from avi.families.posterior import Posterior
from avi.models.base import LatentVariableModel
from avi.precision import full_precision
from avi.runs.load import TrainedRun
from avi.seeding import seeded

__all__ = ["ImageBatch", "image_batch", "image_side", "mean_image", "posterior_means", "prior_draws"]

#: inputs shown with their reconstructions, and draws from the prior; columns of a grid
INPUTS, SAMPLES, COLUMNS = 16, 32, 8


def image_side(dim: int) -> int | None:
    """The side of a square image of ``dim`` pixels (at least 2 x 2), or None."""
    side = math.isqrt(dim)
    return side if side >= 2 and side * side == dim else None


@torch.no_grad()
def mean_image(model: LatentVariableModel, z: Tensor) -> Tensor | None:
    """E[x | z] (Bernoulli probabilities, Gaussian means), or one draw x ~ p(x | z) where the
    mean has no closed form (an autoregressive decoder); None where the model has neither."""
    try:
        return model.likelihood(z).mean
    except NotImplementedError:
        pass
    try:
        return model.sample_data(z)
    except NotImplementedError:
        return None


@torch.no_grad()
def prior_draws(model: LatentVariableModel, n: int) -> Tensor | None:
    """n draws z ~ p(z), or None where the prior cannot be sampled."""
    try:
        return model.prior().sample((n,))
    except NotImplementedError:
        return None


@torch.no_grad()
def posterior_means(posterior: Posterior, x: Tensor, index: Tensor) -> Tensor:
    """E_q[z] for each point of x (data points ``index``), (N, ...); a Monte Carlo mean of 64
    draws where q has no closed-form mean (flows)."""
    q = posterior(x, index)
    try:
        return q.mean
    except NotImplementedError:
        return q.sample((64,)).mean(0)


@dataclass(frozen=True)
class ImageBatch:
    """The fixed inputs of a run's images: x (N, side * side) and their data-point indices,
    the range [low, high] of the data shown as black to white, and the seed of every draw
    (the same prior draws each epoch, while the prior stays the same)."""

    x: Tensor
    index: Tensor
    side: int
    low: float
    high: float
    seed: int

    def _pixels(self, flat: Tensor) -> Tensor:
        """(N, side * side) in the data's units -> (N, 1, side, side) in [0, 1]."""
        scaled = (flat.float() - self.low) / max(self.high - self.low, 1e-12)
        return scaled.clamp(0, 1).reshape(-1, 1, self.side, self.side).cpu()

    def draw(self, model: LatentVariableModel, posterior: Posterior) -> dict[str, Tensor]:
        """``reconstructions``: rows of inputs, each above the row of their reconstructions
        E[x | E_q[z]]; ``samples``: E[x | z] for z ~ p(z). In fp32, the global random state
        left as it was; an image the model cannot draw is left out."""
        images: dict[str, Tensor] = {}
        with seeded(self.seed, self.x.device), full_precision(model, posterior):
            recon = mean_image(model, posterior_means(posterior, self.x, self.index))
            z = prior_draws(model, SAMPLES)
            samples = None if z is None else mean_image(model, z)
        if recon is not None:
            rows = [flat.reshape(-1, COLUMNS, flat.shape[-1]) for flat in (self.x, recon)]
            images["reconstructions"] = self._pixels(torch.stack(rows, 1).flatten(0, 2))
        if samples is not None:
            images["samples"] = self._pixels(samples)
        return images


def image_batch(run: TrainedRun) -> ImageBatch | None:
    """The first 16 validation points of a run of square images (with an encoder; else the
    first 16 training points, whose per-point parameters the posterior holds, binarised once
    where the data are binarised dynamically), a whole number of grid rows; None for other
    data. Black to white spans [0, 1], widened to the range of these points."""
    side = image_side(run.model.data_dim)
    if side is None:
        return None
    validation = run.splits.validation
    if run.posterior.amortized and len(validation) >= INPUTS:
        data = validation
    else:
        data = run.splits.train.subset(slice(0, INPUTS)).binarized(run.config.data.seed + 2)
    n = min(INPUTS, len(data)) // COLUMNS * COLUMNS
    if n == 0:
        return None
    x = data.x[:n].to(run.device)
    index = torch.arange(n, device=run.device)
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 1.0)
    return ImageBatch(x, index, side, low, high, run.config.train.seed)
