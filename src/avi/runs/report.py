"""``avi report``: PNG figures and one self-contained HTML page for a run.

Figures: training and validation ELBO and KL curves; test reconstructions beside the originals
and samples from the prior (image data); a latent-space view (2-D latents directly, otherwise
PCA of posterior means, coloured by label where labels exist); and, where the run has them,
the gap decomposition (``avi gaps``) and evaluation results. Images are embedded as base64 in
``report.html``, so the page opens offline with no external assets.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path
from typing import Any

import torch

from avi.atomic import atomic_write_bytes, save_figure
from avi.errors import RunError
from avi.runs.rundir import EVALUATION, METRICS, SUMMARY, read_json, require_run
from avi.runs.train import TrainedRun, infer_posterior, load_trained

__all__ = ["FIGURES", "run_report"]

#: the figures a report can hold, by file name
FIGURES = ("curves.png", "reconstructions.png", "samples.png", "latent.png", "gaps.png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_metrics(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / METRICS).open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_curves(rows: list[dict[str, float]], path: Path) -> None:
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
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
    plt.close(fig)


def _image_side(dim: int) -> int | None:
    side = math.isqrt(dim)
    return side if side * side == dim else None


def _grid(images: torch.Tensor, side: int, path: Path, title: str, rows: int) -> None:
    plt = _pyplot()
    cols = math.ceil(images.shape[0] / rows)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4))
    for ax, image in zip(axes.flat, images):
        ax.imshow(image.reshape(side, side).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, 110)
    plt.close(fig)


@torch.no_grad()
def _mean_image(run: TrainedRun, z: torch.Tensor) -> torch.Tensor:
    """E[x | z] (Bernoulli probabilities, Gaussian means), or one draw x ~ p(x | z) where the
    mean has no closed form (an autoregressive decoder)."""
    try:
        return run.model.likelihood(z).mean
    except NotImplementedError:
        return run.model.sample_data(z)


def plot_latent(means: torch.Tensor, labels: torch.Tensor | None, path: Path) -> str:
    """Posterior means in 2-D (PCA when K > 2); returns the method used."""
    plt = _pyplot()
    method = "posterior means"
    if means.shape[1] > 2:
        centred = means - means.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False)
        means, method = centred @ v[:, :2], "PCA of posterior means"
    elif means.shape[1] == 1:
        means = torch.cat([means, torch.zeros_like(means)], dim=1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    points = means.cpu().numpy()
    if labels is not None:
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels.cpu().numpy(), cmap="tab10", s=5)
        fig.colorbar(scatter, ax=ax, label="label")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=5)
    ax.set_title(f"Latent space: {method}")
    fig.tight_layout()
    save_figure(fig, path, 110)
    plt.close(fig)
    return method


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


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


def run_report(run_dir: str | Path, *, points: int = 2000) -> Path:
    """Write the figures and ``report.html`` into the run directory; return the page's path."""
    run_dir = require_run(run_dir, checkpoint=False)
    if not (run_dir / "checkpoint.pt").is_file():
        raise RunError(f"run {run_dir} has no checkpoint: nothing to report yet")
    summary = read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).exists() else {}
    if summary.get("status") != "finished":
        raise RunError(
            f"run {run_dir} is still being written (status {summary.get('status', 'unknown')!r}); report it when it has finished"
        )
    run = load_trained(run_dir)
    rows = _read_metrics(run_dir)
    sections: list[tuple[str, str]] = []
    plot_curves(rows, run_dir / "curves.png")
    sections.append(("Training curves", _embed(run_dir / "curves.png")))

    test = run.splits.test
    x = test.x[:points].to(run.device)
    labels = None if test.labels is None else test.labels[:points]
    posterior = infer_posterior(run, x)
    with torch.no_grad():
        index = torch.arange(x.shape[0], device=x.device)
        q = posterior(x, index)
        try:
            means = q.mean
        except NotImplementedError:  # flows: estimate the mean
            means = q.sample((64,)).mean(0)
    side = _image_side(run.model.data_dim)
    if side is not None:
        originals = x[:16]
        recon = _mean_image(run, means[:16])
        _grid(torch.cat([originals, recon]), side, run_dir / "reconstructions.png",
              "test images (top two rows) and reconstructions E[x | mean of q(z|x)] (bottom two rows)", rows=4)  # fmt: skip
        prior_z = run.model.prior().sample((32,))
        _grid(_mean_image(run, prior_z), side, run_dir / "samples.png", "E[x | z], z ~ p(z)", rows=4)
        sections.append(("Reconstructions", _embed(run_dir / "reconstructions.png")))
        sections.append(("Samples from the prior", _embed(run_dir / "samples.png")))
    method = plot_latent(means.flatten(1).cpu(), labels, run_dir / "latent.png")  # (B, N, C) one-hot means: flat
    sections.append((f"Latent space ({method})", _embed(run_dir / "latent.png")))
    if (run_dir / "gaps.png").exists():
        gap_rows = [json.loads(p.read_text()) for p in sorted(run_dir.glob("gaps-*.json"))]
        tables = "".join(
            _table(
                {
                    k: g[k]
                    for k in (
                        "family",
                        "data",
                        "n",
                        "log_likelihood",
                        "elbo_optimal",
                        "elbo_amortized",
                        "approximation_gap",
                        "amortization_gap",
                    )
                }
            )  # fmt: skip
            for g in gap_rows
        )
        sections.append(("Gap decomposition", _embed(run_dir / "gaps.png") + tables))
    for extra in sorted(run_dir.glob("collapse*.png")):
        sections.append(("Collapse diagnostics", _embed(extra)))
    final = {k: v for k, v in rows[-1].items()} if rows else {}
    if (run_dir / EVALUATION).exists():
        final.update(
            {f"test_{k}": v for k, v in read_json(run_dir / EVALUATION).items() if not isinstance(v, (list, dict))}
        )
    sections.append(("Final metrics", _table(final)))
    sections.append(("Configuration", f"<pre>{html.escape(json.dumps(run.config.model_dump(), indent=2))}</pre>"))
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>avi report: {html.escape(run_dir.name)}</title>'
        f"<style>{STYLE}</style></head><body><h1>avi report: {html.escape(str(run_dir))}</h1>{body}</body></html>"
    )
    path = run_dir / "report.html"
    atomic_write_bytes(path, page.encode())
    return path
