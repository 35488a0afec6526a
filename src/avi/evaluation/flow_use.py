"""Whether the layers of a finite flow q(z|x) (planar, radial, Sylvester) do anything.

A layer G(z) = z + d(z) whose displacement d is the same for all of a point's draws leaves q's
shape as it was: it shifts q's mean, and the flow is the base Gaussian again, trained through a
harder parametrisation. Planar layers end so when tanh saturates over all of q's mass (the
Rezende and Mohamed reproduction's did, silently: docs/results.md). Per layer k, with z its
input over q's draws,

    reshaping_k = E_x[tr Cov_q(G_k(z) - z)] / E_x[tr Cov_q(z)],

0 for a pure shift, of order 1 where the layer moves a point's draws about as far as they spread
in every direction (a planar layer moves them along one direction of D: of order 1/D).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from avi.families.finite_flow import FiniteFlow
from avi.nn import eval_mode

__all__ = ["IN_USE", "flow_layer_use", "layers_in_use", "unused_layers_warning"]

#: the reshaping above which a layer counts as in use: a planar layer moves draws along one
#: direction of D, so a live one reshapes of order 1/D (0.007-0.011 for the five live layers of
#: a 40-dimensional run at 131 passes), a saturated one 1e-15 to 2e-5 (docs/results.md)
IN_USE = 1e-4


@torch.no_grad()
def flow_layer_use(
    posterior: nn.Module,
    x: Tensor,
    *,
    num_samples: int = 100,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
) -> Tensor | None:
    """reshaping_k of each layer of the posterior's finite flow on the points x (N, D), from
    ``num_samples`` draws of each point's q (variances with Bessel's correction), in batches of
    ``batch_size`` points: (K,); None where q(z|x) is not a :class:`FiniteFlow` (found from the
    first point alone, as the per-epoch diagnostics ask every run)."""
    totals = []  # per batch, (K, 2): summed tr Cov of each layer's displacement and of its input
    with eval_mode(posterior):
        if x.shape[0] == 0 or not isinstance(posterior(x[:1], torch.arange(1, device=x.device)), FiniteFlow):
            return None
        for start in range(0, x.shape[0], batch_size):
            index = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
            q = cast(FiniteFlow, posterior(x[index], index))
            noise = torch.randn((num_samples, *q.loc.shape), generator=generator, dtype=q.loc.dtype)
            z = q.loc + q.scale * noise.to(q.loc.device)
            batch = []
            for layer in q.layers:
                out, _ = layer(z)
                batch.append(torch.stack([(out - z).var(0).sum(), z.var(0).sum()]))
                z = out
            totals.append(torch.stack(batch))
    moved, spread = torch.stack(totals).sum(0).unbind(-1)
    return moved / spread


def layers_in_use(reshaping: Sequence[float] | Tensor) -> int:
    """How many layers reshape q by more than :data:`IN_USE`."""
    return sum(float(r) > IN_USE for r in reshaping)


def unused_layers_warning(reshaping: list[float]) -> str | None:
    """The warning for layers at most :data:`IN_USE` (by their ``reshaping``), or None."""
    unused = [k + 1 for k, r in enumerate(reshaping) if not r > IN_USE]
    if not unused:
        return None
    return (
        f"{len(unused)} of {len(reshaping)} flow layers (number {', '.join(map(str, unused))}) reshape q by at most "
        f"{IN_USE} (E tr Cov of their displacement over E tr Cov of their input): each only shifts q's mean. "
        "Centred layers (inference.flow_centred = true) keep them inside q's mass."
    )
