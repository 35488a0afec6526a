"""``avi report``: PNG figures and one self-contained HTML page for a run.

The page opens with a summary: the test log-likelihood with its k and standard error, the
debiased estimate's 95% interval and Pareto k-hat (of the most careful evaluation where
``avi evaluate`` ran; the others listed), the ELBO
with its reconstruction and KL terms, active units with a warning where some latent dimensions
collapsed, and the inference gaps (where ``avi gaps`` ran). Then the figures: training curves;
test reconstructions and samples from the prior (image data); the latent space (posterior means
of 2-D latents, else their principal components), one colour per class where the data have
labels; KL per latent dimension; the collapse diagnostics; the inference gaps with 95%
intervals. Then the metrics grouped by split (with the evaluation's settings and warnings apart
from them) and the config by section. Where a figure is not
drawn, the page says why. Images are embedded as base64 in ``report.html``, so the page opens
offline with no external assets.

A run that stopped early (interrupted, or a killed fit: :func:`~avi.runs.rundir.run_status`) or
diverged is reported from its last checkpoint, and the page says so; a run that an ``avi fit``
is still writing is refused.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avi.atomic import atomic_write_bytes
from avi.models.base import LatentVariableModel
from avi.runs.config import Config
from avi.runs.images import image_side, mean_image, posterior_means, prior_draws
from avi.runs.load import TrainedRun, infer_posterior, load_trained
from avi.runs.report_figures import gaps_figure, kl_figure, latent_figure, plot_curves, plot_grid, save
from avi.runs.report_tables import (
    Summary,
    config_sections,
    fmt,
    gaps_table,
    kl_series,
    metrics_by_split,
    metrics_table,
    summary,
    table_html,
)
from avi.runs.rundir import read_evaluations, read_gaps, read_metrics, require_run, run_status

__all__ = ["FIGURES", "run_report"]

#: the figures a report can draw, by file name (it also embeds ``avi fit``'s collapse.png)
FIGURES = (
    "curves.png", "reconstructions.png", "samples.png", "latent.png", "kl-per-dimension.png", "inference-gaps.png",
)  # fmt: skip

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
img{max-width:100%;display:block;margin:.5em 0}table{border-collapse:collapse;font-size:.9em;margin:.3em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f5f5f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:600;padding:.2em 0}
tr.changed td{font-weight:600}.tables{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.warning{background:#fff4e5;border-left:4px solid #e69500;padding:.5em .8em}
#summary table{font-size:1em}#summary td{text-align:left;font-variant-numeric:tabular-nums}"""

Section = tuple[str, str]


def run_report(run_dir: str | Path, *, points: int = 2000) -> Path:
    """Write the figures and ``report.html`` into the run directory; return the page's path.
    Figures use the first ``points`` test points."""
    run_dir = require_run(run_dir, stopped=True)
    status = run_status(run_dir)
    rows = read_metrics(run_dir)  # a damaged file fails before the slow parts
    evaluations = read_evaluations(run_dir)  # the most careful first
    evaluation = evaluations[0] if evaluations else {}
    gaps = read_gaps(run_dir)
    run = load_trained(run_dir)
    head = summary(rows, evaluations, gaps, run=str(run_dir), status=status, latent_dim=run.config.model.latent_dim,
                   train=run.config.train)  # fmt: skip
    plot_curves(rows, run_dir / "curves.png")
    sections = [("Summary", _summary_html(head)), ("Training curves", _embed(run_dir / "curves.png"))]
    sections += _data_sections(run, run_dir, points)
    sections += [_kl_section(rows, evaluation, run_dir), _collapse_section(run_dir), _gaps_section(gaps, run_dir)]
    sections += [("Metrics by split", _metrics_html(rows[-1], evaluation, run_dir)), _config_section(run.config)]
    path = run_dir / "report.html"
    atomic_write_bytes(path, _page(run_dir, run.config, sections, _status_note(run_dir, status, rows)).encode())
    return path


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f"<p><em>{html.escape(text)}</em></p>"


def _summary_html(head: Summary) -> str:
    warnings = "".join(f'<p class="warning">{html.escape(w)}</p>' for w in head.warnings)
    rows = [(label, [value]) for label, value in head.rows]
    caption = "nats per data point; ± one Monte Carlo standard error"
    return f'<div id="summary">{warnings}{table_html(None, rows, caption=caption)}</div>'


def _data_sections(run: TrainedRun, run_dir: Path, points: int) -> list[Section]:
    """The figures of the first ``points`` test points: reconstructions and prior samples
    (:func:`_image_sections`), and the latent space of their posterior means."""
    test = run.splits.test
    x = test.x[:points].to(run.device)
    means = posterior_means(infer_posterior(run, x), x, torch.arange(x.shape[0], device=x.device))
    sections = _image_sections(run.model, x, means, run_dir)
    labels = None if test.labels is None else test.labels[:points]
    figure, method = latent_figure(means.flatten(1).cpu(), labels)  # (B, N, C) one-hot means: flat
    latent = _embed(save(figure, run_dir / "latent.png"))
    if labels is None:
        latent += _note("points not coloured by class: the test split has no labels")
    return [*sections, (f"Latent space ({method})", latent)]


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
    where the data are square images; a note in place of each figure that is not drawn."""
    side = image_side(x.shape[1])
    if side is None:
        why = f"not drawn: reconstructions and samples need square images; the data are {x.shape[1]}-dimensional"
        return [("Image figures", _note(why))]
    no_mean = "not drawn: the likelihood has no mean and the model no sample_data"
    recon = mean_image(model, means[:16])
    if recon is None:
        sections = [("Reconstructions", _note(no_mean))]
    else:
        title = "test images (top two rows) and reconstructions E[x | mean of q(z|x)] (bottom two rows)"
        plot_grid(torch.cat([x[:16], recon]), side, run_dir / "reconstructions.png", title, rows=4)
        sections = [("Reconstructions", _embed(run_dir / "reconstructions.png"))]
    prior_z = prior_draws(model, 32)
    samples = None if prior_z is None else mean_image(model, prior_z)
    if samples is None:
        sections.append(
            ("Samples from the prior", _note("not drawn: the prior cannot be sampled" if prior_z is None else no_mean))
        )
    else:
        plot_grid(samples, side, run_dir / "samples.png", "E[x | z], z ~ p(z)", rows=4)
        sections.append(("Samples from the prior", _embed(run_dir / "samples.png")))
    return sections


def _kl_section(rows: list[dict[str, Any]], evaluation: dict[str, Any], run_dir: Path) -> Section:
    """KL per latent dimension (validation at the last diagnosed epoch of ``rows``, and test
    where ``avi evaluate`` ran), as bars."""
    series = kl_series(rows, evaluation)
    if not series:
        return ("KL per latent dimension", _note("not drawn: the run recorded no KL per dimension"))
    return ("KL per latent dimension", _embed(save(kl_figure(series), run_dir / "kl-per-dimension.png")))


def _collapse_section(run_dir: Path) -> Section:
    """The collapse diagnostics over epochs that ``avi fit`` drew (collapse.png)."""
    figures = sorted(run_dir.glob("collapse*.png"))
    if not figures:
        return ("Collapse diagnostics", _note("not drawn: avi fit drew no collapse.png for this run"))
    return ("Collapse diagnostics", "".join(_embed(path) for path in figures))


def _gaps_section(gaps: list[dict[str, Any]], run_dir: Path) -> Section:
    """The gap decompositions saved by ``avi gaps``: their figure with 95% intervals, and a table."""
    if not gaps:
        return ("Inference gaps", _note(f"not drawn: no gaps computed; run avi gaps {run_dir}"))
    content = _embed(save(gaps_figure(gaps), run_dir / "inference-gaps.png")) + table_html(*gaps_table(gaps))
    missing = [g["family"] for g in gaps if "approximation_gap_stderr" not in g]
    if missing:
        content += _note(f"no error bars for {', '.join(missing)}: its decomposition saved no standard errors")
    return ("Inference gaps", content)


def _metrics_html(last: dict[str, Any], evaluation: dict[str, Any], run_dir: Path) -> str:
    """The last epoch's metrics and the evaluation's, one column per split, with the evaluation's
    warnings as notes; then the rest of the epoch's row and the evaluation's settings."""
    groups = metrics_by_split(last, evaluation)
    content = table_html(*metrics_table(groups))
    if not groups["test"]:
        content += _note(f"no test metrics: run avi evaluate {run_dir}")
    content += "".join(_note(f"test: {warning}") for warning in groups["notes"].values())
    tables = [("run", "training, last epoch"), ("evaluation", "evaluation settings")]
    settings = "".join(
        table_html(None, [(name, [fmt(value)]) for name, value in groups[group].items()], caption=caption)
        for group, caption in tables
        if groups[group]
    )
    return f'{content}<div class="tables">{settings}</div>'


def _config_section(config: Config) -> Section:
    """A table per section of the config; bold: values that differ from the defaults."""
    tables = "".join(
        table_html(None, [(key, [value]) for key, value, _ in rows], caption=name, bold={k for k, _, c in rows if c})
        for name, rows in config_sections(config.model_dump(), Config().model_dump())
    )
    return ("Configuration", f'<p>bold: set differently from the defaults</p><div class="tables">{tables}</div>')


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
