"""The figures of ``avi report``, each built from plain numbers and saved as one PNG.

Training curves; image grids (test images, reconstructions, prior samples); the latent space
(posterior means, or their first two principal components with the share of variance each
explains), one colour per class where the data have labels; KL per latent dimension; and the
inference gaps with 95% intervals. Every legend sits outside its axes, so none covers the data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from avi.atomic import save_figure

__all__ = [
    "MAX_CLASSES",
    "gaps_figure",
    "kl_figure",
    "latent_coordinates",
    "latent_figure",
    "plot_curves",
    "plot_grid",
    "save",
]

#: labels with at most this many distinct values get a colour each and a legend; more, a colour bar
MAX_CLASSES = 20
#: the quantile of the normal distribution of a two-sided 95% interval
Z95 = 1.96
DPI = 110


def save(fig: Figure, path: Path) -> Path:
    """``fig`` as a PNG at ``path`` (atomically); returns ``path``."""
    save_figure(fig, path, DPI)
    return path


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Training and validation ELBO (left) and KL term (right) per epoch; one legend above both."""
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for split, prefix in (("train", "train_"), ("validation", "val_")):
        left.plot(epochs, [r[f"{prefix}elbo"] for r in rows], marker="o", label=split)
        right.plot(epochs, [r[f"{prefix}kl"] for r in rows], marker="o", label=split)
    left.set(xlabel="epoch", ylabel="ELBO (nats per point)", title="ELBO")
    right.set(xlabel="epoch", ylabel="KL(q || p) (nats per point)", title="KL term")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(*left.get_legend_handles_labels(), loc="outside upper center", ncols=2, frameon=False)
    save(fig, path)


def plot_grid(images: Tensor, side: int, path: Path, title: str, rows: int) -> None:
    """``images`` (N, side * side) as grey squares in ``rows`` rows, black to white spanning
    [0, 1] widened to the range of the images (Gaussian data outside [0, 1] stay visible)."""
    cols = math.ceil(images.shape[0] / rows)
    low, high = min(float(images.min()), 0.0), max(float(images.max()), 1.0)
    fig = Figure(figsize=(cols * 0.9, rows * 0.9 + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, image in zip(axes.flat, images, strict=False):
        ax.imshow(image.reshape(side, side).cpu().numpy(), cmap="gray", vmin=low, vmax=high)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)


def latent_coordinates(means: Tensor) -> tuple[Tensor, tuple[str, str], str]:
    """Points (N, 2) for posterior means (N, K) and their axis labels: the means themselves for
    K = 2 (K = 1 against a zero axis), else their first two principal components, each labelled
    with its share s_i^2 / sum_j s_j^2 of the variance (s the singular values of the centred
    means); and the method, in words."""
    if means.shape[1] == 1:
        flat = torch.cat([means, torch.zeros_like(means)], 1)
        return flat, ("E_q[z_1]", "(K = 1: no second axis)"), "posterior means"
    if means.shape[1] == 2:
        return means, ("E_q[z_1]", "E_q[z_2]"), "posterior means"
    centred = (means - means.mean(0)).double()
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    share = s.pow(2) / s.pow(2).sum().clamp_min(1e-300)
    names = tuple(f"PC {i + 1} of E_q[z] ({100 * share[i]:.1f}% of variance)" for i in range(2))
    return (centred @ vh[:2].T).float(), (names[0], names[1]), "PCA of posterior means"


def latent_figure(means: Tensor, labels: Tensor | None) -> tuple[Figure, str]:
    """The latent-space scatter of posterior means (N, K) (:func:`latent_coordinates`), one colour
    and legend entry per class where ``labels`` (N,) has at most :data:`MAX_CLASSES` values, a
    colour bar where it has more; and the method, in words."""
    points, (xlabel, ylabel), method = latent_coordinates(means)
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.subplots()
    xy = points.cpu().numpy()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=5, color="#4C72B0")
    elif labels.unique().numel() <= MAX_CLASSES:
        _scatter_classes(ax, xy, labels.cpu())
    else:
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels.cpu().numpy(), cmap="viridis", s=5)
        fig.colorbar(scatter, ax=ax, label="label")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"Latent space: {method}")
    ax.grid(alpha=0.3)
    return fig, method


def _scatter_classes(ax: Axes, xy: Any, labels: Tensor) -> None:
    """One scatter per class in a qualitative palette, and a legend to the right of the axes."""
    classes = labels.unique()
    palette = colormaps["tab10" if classes.numel() <= 10 else "tab20"]
    for i, value in enumerate(classes):
        chosen = (labels == value).numpy()
        ax.scatter(xy[chosen, 0], xy[chosen, 1], s=5, color=palette(i), label=_class_name(value.item()))
    ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.02, 1), markerscale=3, frameon=False)


def _class_name(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def kl_figure(series: dict[str, list[float]]) -> Figure:
    """KL(q(z_k|x) || p(z_k)) per latent dimension k, one bar per dimension and ``series`` entry
    (a split: its mean over points), the legend above the axes."""
    bars = max(len(v) for v in series.values()) * len(series)
    fig = Figure(figsize=(min(10.0, max(5.0, 0.25 * bars + 2)), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        offsets = [k + (i - (len(series) - 1) / 2) * width for k in range(len(values))]
        ax.bar(offsets, values, width=width, label=name)
    ax.set(xlabel="latent dimension k", ylabel="KL (nats per point)", title="KL(q(z_k|x) || p(z_k)) per dimension")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper right", ncols=len(series), frameon=False)
    return fig


def gaps_figure(rows: list[dict[str, Any]]) -> Figure:
    """The approximation and amortization gaps of each decomposition (``avi gaps``) side by side,
    each with its 95% interval (+- 1.96 standard errors) where the decomposition saved one."""
    fig = Figure(figsize=(2.2 * len(rows) + 3, 4), layout="constrained")
    ax = fig.subplots()
    names = [f"{r['family']}\n({r['split'] or r['data']}, n={r['n']})" for r in rows]
    for i, (gap, colour) in enumerate((("approximation_gap", "#4C72B0"), ("amortization_gap", "#DD8452"))):
        values = [_finite(r[gap]) for r in rows]
        errors = [Z95 * _finite(r.get(f"{gap}_stderr")) for r in rows]
        ax.bar([j + (i - 0.5) * 0.38 for j in range(len(rows))], values, 0.38, yerr=errors, capsize=4,
               color=colour, label=gap.replace("_", " "))  # fmt: skip
    ax.set_xticks(range(len(rows)), names)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(ylabel="nats per data point", title="Inference gaps, 95% intervals")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper right", ncols=2, frameon=False)
    return fig


def _finite(value: Any) -> float:
    """A saved number, 0 where it is missing or was not finite (JSON null)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0
