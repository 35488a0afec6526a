"""``avi report``: PNG figures and one self-contained HTML page for a run.

Figures: training and validation ELBO and KL curves; test reconstructions beside the originals
and samples from the prior (image data); a latent-space view (2-D latents directly, otherwise
PCA of posterior means, coloured by label where labels exist); and, where the run has them,
the gap decomposition (``avi gaps``) and evaluation results. Images are embedded as base64 in
``report.html``, so the page opens offline with no external assets.

A run that stopped early (interrupted, or a killed fit: :func:`~avi.runs.rundir.run_status`) or
diverged is reported from its last checkpoint, and the page says so; a run that an ``avi fit``
is still writing is refused.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from avi.atomic import atomic_write_bytes, save_figure
from avi.models.base import LatentVariableModel
from avi.runs.config import Config
from avi.runs.load import infer_posterior, load_trained
from avi.runs.rundir import (
    EVALUATION,
    EVALUATION_SCHEMA,
    json_text,
    read_gaps,
    read_json,
    read_metrics,
    require_run,
    run_status,
)

__all__ = ["FIGURES", "run_report"]

#: the figures a report can hold, by file name
FIGURES = ("curves.png", "reconstructions.png", "samples.png", "latent.png", "gaps.png")


def plot_curves(rows: list[dict[str, float]], path: Path) -> None:
    """Training and validation ELBO (left) and KL term (right) per epoch."""
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 3.6))
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [r["train_elbo"] for r in rows], marker="o", label="train")
    left.plot(epochs, [r["val_elbo"] for r in rows], marker="o", label="validation")
    left.set(xlabel="epoch", ylabel="ELBO (nats per point)", title="ELBO")
    right.plot(epochs, [r["train_kl"] for r in rows], marker="o", label="train")
    right.plot(epochs, [r["val_kl"] for r in rows], marker="o", label="validation")
    right.set(xlabel="epoch", ylabel="KL(q || p) (nats)", title="KL term")
    for ax in (left, right):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, 110)


def _image_side(dim: int) -> int | None:
    side = math.isqrt(dim)
    return side if side * side == dim else None


def _grid(images: Tensor, side: int, path: Path, title: str, rows: int) -> None:
    cols = math.ceil(images.shape[0] / rows)
    fig = Figure(figsize=(cols * 0.9, rows * 0.9 + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, image in zip(axes.flat, images, strict=False):
        ax.imshow(image.reshape(side, side).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, 110)


@torch.no_grad()
def _mean_image(model: LatentVariableModel, z: Tensor) -> Tensor | None:
    """E[x | z] (Bernoulli probabilities, Gaussian means), or one draw x ~ p(x | z) where the
    mean has no closed form (an autoregressive decoder); None where the model has neither."""
    try:
        return model.likelihood(z).mean
    except NotImplementedError:
        pass
    sample_data = getattr(model, "sample_data", None)
    try:
        return None if sample_data is None else sample_data(z)
    except NotImplementedError:
        return None


@torch.no_grad()
def _prior_draws(model: LatentVariableModel, n: int) -> Tensor | None:
    """n draws z ~ p(z), or None where the prior cannot be sampled."""
    try:
        return model.prior().sample((n,))
    except NotImplementedError:
        return None


@torch.no_grad()
def _posterior_means(posterior: nn.Module, x: Tensor) -> Tensor:
    """E_q[z] for each point of x, (N, ...); a Monte Carlo mean of 64 draws where q has no
    closed-form mean (flows)."""
    q = posterior(x, torch.arange(x.shape[0], device=x.device))
    try:
        return q.mean
    except NotImplementedError:
        return q.sample((64,)).mean(0)


def plot_latent(means: Tensor, labels: Tensor | None, path: Path) -> str:
    """Posterior means in 2-D (PCA when K > 2); returns the method used."""
    method = "posterior means"
    if means.shape[1] > 2:
        centred = means - means.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False)
        means, method = centred @ v[:, :2], "PCA of posterior means"
    elif means.shape[1] == 1:
        means = torch.cat([means, torch.zeros_like(means)], dim=1)
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    points = means.cpu().numpy()
    if labels is not None:
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels.cpu().numpy(), cmap="tab10", s=5)
        fig.colorbar(scatter, ax=ax, label="label")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=5)
    ax.set_title(f"Latent space: {method}")
    fig.tight_layout()
    save_figure(fig, path, 110)
    return method


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f"<p><em>{html.escape(text)}</em></p>"


def _table(rows: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(f'{v:.4g}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
img{max-width:100%;display:block;margin:.5em 0}table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f5f5f5}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}"""

#: the columns of each gap decomposition shown in the report
GAP_COLUMNS = (
    "family", "data", "n", "log_likelihood", "elbo_optimal", "elbo_amortized", "approximation_gap", "amortization_gap",
)  # fmt: skip

Section = tuple[str, str]


def run_report(run_dir: str | Path, *, points: int = 2000) -> Path:
    """Write the figures and ``report.html`` into the run directory; return the page's path.
    Figures use the first ``points`` test points."""
    run_dir = require_run(run_dir, stopped=True)
    status = run_status(run_dir)
    rows = read_metrics(run_dir)  # a damaged file fails before the slow parts
    final = _final_metrics(rows, run_dir)
    gaps = _gaps_sections(run_dir)
    run = load_trained(run_dir)
    plot_curves(rows, run_dir / "curves.png")
    sections = [("Training curves", _embed(run_dir / "curves.png"))]
    test = run.splits.test
    x = test.x[:points].to(run.device)
    means = _posterior_means(infer_posterior(run, x), x)
    sections += _image_sections(run.model, x, means, run_dir)
    labels = None if test.labels is None else test.labels[:points]
    method = plot_latent(means.flatten(1).cpu(), labels, run_dir / "latent.png")  # (B, N, C) one-hot means: flat
    sections.append((f"Latent space ({method})", _embed(run_dir / "latent.png")))
    sections += gaps
    sections += [("Collapse diagnostics", _embed(extra)) for extra in sorted(run_dir.glob("collapse*.png"))]
    sections.append(("Final metrics", _table(final)))
    sections.append(("Configuration", f"<pre>{html.escape(json_text(run.config.model_dump(), indent=2))}</pre>"))
    path = run_dir / "report.html"
    atomic_write_bytes(path, _page(run_dir, run.config, sections, _status_note(run_dir, status, rows)).encode())
    return path


def _status_note(run_dir: Path, status: str, rows: list[dict[str, Any]]) -> str:
    """What the page says about a run that did not finish: where it stopped and how to go on."""
    epoch = rows[-1]["epoch"]  # a run with a checkpoint has a row (read_metrics)
    if status == "interrupted":
        return (
            f"This run was interrupted at epoch {epoch}: the figures show its last checkpoint. "
            f"Continue it with avi fit --resume {run_dir}."
        )
    if status == "diverged":
        return f"This run diverged after epoch {epoch}: the figures show its last finite checkpoint."
    return ""


def _image_sections(model: LatentVariableModel, x: Tensor, means: Tensor, run_dir: Path) -> list[Section]:
    """Reconstructions of the first 16 test images and E[x | z] for 32 draws from the prior,
    where the data are square images; a note in place of a figure the model cannot draw."""
    side = _image_side(x.shape[1])
    if side is None:
        return []
    sections = []
    recon = _mean_image(model, means[:16])
    if recon is None:
        sections.append(
            ("Reconstructions", _note("not drawn: the likelihood has no mean and the model no sample_data"))
        )
    else:
        title = "test images (top two rows) and reconstructions E[x | mean of q(z|x)] (bottom two rows)"
        _grid(torch.cat([x[:16], recon]), side, run_dir / "reconstructions.png", title, rows=4)
        sections.append(("Reconstructions", _embed(run_dir / "reconstructions.png")))
    prior_z = _prior_draws(model, 32)
    samples = None if prior_z is None else _mean_image(model, prior_z)
    if samples is None:
        why = (
            "the prior cannot be sampled"
            if prior_z is None
            else "the likelihood has no mean and the model no sample_data"
        )
        sections.append(("Samples from the prior", _note(f"not drawn: {why}")))
    else:
        _grid(samples, side, run_dir / "samples.png", "E[x | z], z ~ p(z)", rows=4)
        sections.append(("Samples from the prior", _embed(run_dir / "samples.png")))
    return sections


def _gaps_sections(run_dir: Path) -> list[Section]:
    """The gap figure and a table per decomposition saved by ``avi gaps``, where there are any."""
    if not (run_dir / "gaps.png").exists():
        return []
    gap_rows = read_gaps(run_dir)
    tables = "".join(_table({k: g[k] for k in GAP_COLUMNS}) for g in gap_rows)
    return [("Gap decomposition", _embed(run_dir / "gaps.png") + tables)]


def _final_metrics(rows: list[dict[str, float]], run_dir: Path) -> dict[str, Any]:
    """The last epoch's metrics and, where ``avi evaluate`` ran, its scalar results (``test_``)."""
    final: dict[str, Any] = dict(rows[-1]) if rows else {}
    if (run_dir / EVALUATION).exists():
        evaluation = read_json(run_dir / EVALUATION, EVALUATION_SCHEMA)
        final.update({f"test_{k}": v for k, v in evaluation.items() if not isinstance(v, (list, dict))})
    return final


def _page(run_dir: Path, config: Config, sections: list[Section], note: str = "") -> str:
    """The self-contained HTML page: a title naming the run and its model (a built-in name or a
    user model's import path), the ``note`` on how the run ended (where there is one), then the
    sections."""
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    about = f"model {config.model.name}, {config.inference.strategy} inference, {config.inference.family} family"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>avi report: {html.escape(run_dir.name)}</title>"
        f"<style>{STYLE}</style></head><body><h1>avi report: {html.escape(str(run_dir))}</h1>"
        f"<p>{html.escape(about)}</p>{_note(note) if note else ''}{body}</body></html>"
    )
