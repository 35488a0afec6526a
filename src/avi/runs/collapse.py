"""Posterior collapse in runs: the remedies' checks, the objective of each epoch, when to train
aggressively, the diagnostics recorded per epoch, and their figure.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from avi.atomic import save_figure
from avi.errors import ConfigError
from avi.evaluation.collapse import collapse_diagnostics
from avi.evaluation.flow_use import flow_layer_use, layers_in_use
from avi.families.flow import FlowFamily
from avi.families.sylvester import SylvesterFamily
from avi.models.base import LatentVariableModel
from avi.runs.config import Config
from avi.runs.rundir import diagnosed
from avi.seeding import seeded

__all__ = [
    "COLLAPSE_FIGURE",
    "FLOW_MI_BATCH_SIZE",
    "MI_BATCH_SIZE",
    "aggressive_next",
    "diagnostics_row",
    "mi_settings",
    "plot_collapse",
]

#: points per batch of the mutual-information estimate (in expectation at most log 500 = 6.2 nats)
MI_BATCH_SIZE = 500
#: a flow posterior's: one batch of 100 (at most log 100 = 4.6 nats), as the density of a flow
#: at another point's sample costs a pass per latent dimension (an NSF's 2 x 500^2 took minutes)
FLOW_MI_BATCH_SIZE = 100
COLLAPSE_FIGURE = "collapse.png"


def aggressive_next(config: Config, rows: list[dict[str, Any]]) -> bool:
    """Whether the next epoch trains aggressively: from the start while the mutual information
    of each epoch is at least that of the epoch before (the first compared with 0), then never
    again (He et al. 2019, their text models' rule). Every aggressive epoch records the
    diagnostics, so the rows that have them end with those of the aggressive epochs."""
    if not config.remedies.aggressive:
        return False
    if not rows:
        return True
    if not rows[-1].get("aggressive"):
        return False
    information = [row["mutual_information"] for row in diagnosed(rows)]
    previous = information[-2] if len(information) > 1 else 0.0
    return information[-1] >= previous


def mi_settings(posterior: nn.Module) -> dict[str, int]:
    """The mutual-information batch of :func:`collapse_diagnostics` for ``posterior``: batches of
    :data:`MI_BATCH_SIZE`, or one batch of :data:`FLOW_MI_BATCH_SIZE` for a flow family whose
    density at another point's sample costs a pass per latent dimension (IAF, NSF, Sylvester)."""
    if isinstance(getattr(posterior, "family", None), (FlowFamily, SylvesterFamily)):
        return {"batch_size": FLOW_MI_BATCH_SIZE, "mi_points": FLOW_MI_BATCH_SIZE}
    return {"batch_size": MI_BATCH_SIZE}


def diagnostics_row(model: LatentVariableModel, posterior: nn.Module, x: Tensor, *, seed: int = 0) -> dict[str, Any]:
    """Metrics columns ``kl_dim_0..K-1``, ``active_units`` and ``mutual_information`` of the
    posterior on x, for a model with several latent layers the active units of each,
    ``active_units_layer_0..L-1`` (z_1 first: Burda et al.'s "16+5"), and for a finite flow
    (planar, radial, Sylvester) ``flow_layers_in_use``, its layers that reshape q by more than
    :data:`~avi.evaluation.flow_use.IN_USE` (:func:`~avi.evaluation.flow_use.flow_layer_use`);
    with the random draws of the estimates seeded by ``seed`` and the global RNG left as it was
    (training draws the same numbers with or without diagnostics)."""
    with seeded(seed, x.device):
        d = collapse_diagnostics(model, posterior, x, **mi_settings(posterior))
        reshaping = flow_layer_use(posterior, x)
    layers = d.active_units_per_layer if len(d.active_units_per_layer) > 1 else ()
    in_use = {} if reshaping is None else {"flow_layers_in_use": layers_in_use(reshaping)}
    return {
        **{f"kl_dim_{k}": v for k, v in enumerate(d.kl_per_dim.tolist())},
        "active_units": d.active_units,
        **{f"active_units_layer_{layer}": count for layer, count in enumerate(layers)},
        "mutual_information": d.mutual_information,
        **in_use,
    }


def _plot_active_units(axes: Any, epochs: list[int], rows: Sequence[Mapping[str, str]]) -> None:
    """The active units over epochs on ``axes``, and dashed those of each latent layer
    (``active_units_layer_0..``, z_1 first) where the metrics have them."""
    axes.plot(epochs, [int(float(r["active_units"])) for r in rows], "o-", color="#4C72B0", label="active units")
    layers = [k for k in rows[0] if k.startswith("active_units_layer_")]
    for layer, key in enumerate(layers):
        counts, shade = [int(float(r[key])) for r in rows], 0.4 + 0.6 * layer / len(layers)
        axes.plot(epochs, counts, "--", color="#4C72B0", alpha=shade, label=f"active in z_{layer + 1}")


def _plot_kl(fig: Any, axes: Any, epochs: list[int], kl: Tensor) -> None:
    """The heat map of log10 KL per latent dimension (rows of ``kl``, (K, epochs)) on ``axes``,
    each epoch's cell reaching halfway to its neighbours (the diagnosed epochs may be apart)."""
    from matplotlib.ticker import MaxNLocator

    edges = [epochs[0] - 0.5, *((a + b) / 2 for a, b in pairwise(epochs)), epochs[-1] + 0.5]
    rows = [d - 0.5 for d in range(kl.shape[0] + 1)]
    image = axes.pcolormesh(edges, rows, kl.clamp_min(1e-3).log10().numpy(), cmap="viridis")
    fig.colorbar(image, ax=axes, label="log10 KL (nats)")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("latent dimension")
    axes.set_title("KL(q(z_k|x) || p(z_k)) per dimension, validation mean")


def plot_collapse(run_dir: Path) -> Path:
    """``collapse.png`` from the run's metrics: KL per latent dimension over epochs (heat map,
    each epoch's cell reaching halfway to the next diagnosed epoch) above, active units (and
    those of each latent layer, where the model has several), mutual information and the KL
    weight over epochs below; of the epochs that recorded the diagnostics (``diagnosed``)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    with (run_dir / "metrics.csv").open() as f:
        every = list(csv.DictReader(f))
    rows = diagnosed(every)
    dims = sorted((k for k in every[0] if k.startswith("kl_dim_")), key=lambda k: int(k.removeprefix("kl_dim_")))
    if not (dims and rows):
        raise ConfigError(f"{run_dir} has no collapse diagnostics in its metrics")
    epochs = [int(r["epoch"]) for r in rows]
    kl = torch.tensor([[float(r[k]) for r in rows] for k in dims])
    fig = Figure(figsize=(7, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    _plot_kl(fig, top, epochs, kl)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    _plot_active_units(bottom, epochs, rows)
    bottom.set_ylabel("active units", color="#4C72B0")
    bottom.set_ylim(-0.5, len(dims) + 0.5)
    bottom.set_xlabel("epoch")
    right = bottom.twinx()
    right.plot(epochs, [float(r["mutual_information"]) for r in rows], "s-", color="#DD8452", label="I(x; z)")
    if "kl_weight" in every[0]:
        weights = [float(r["kl_weight"]) for r in every]
        right.plot([int(r["epoch"]) for r in every], weights, ":", color="gray", label="KL weight")
    right.set_ylabel("nats (MI) / KL weight")
    lines = bottom.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    # below the axes, so that it never covers the curves
    bottom.legend(lines, [line.get_label() for line in lines], loc="upper center", bbox_to_anchor=(0.5, -0.3),
                  ncols=len(lines), fontsize="small", frameon=False)  # fmt: skip
    fig.tight_layout()
    path = run_dir / COLLAPSE_FIGURE
    save_figure(fig, path, 110)
    return path
