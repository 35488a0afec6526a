"""``avi compare RUN_DIR RUN_DIR ...``: the key metrics of several runs side by side.

Each run contributes what it has: final training and validation ELBO from its metrics, test
ELBO and log-likelihood from ``avi evaluate`` (evaluation.json), gaps from ``avi gaps``,
active units where recorded, and training time. The best value of each row is marked. Every
file is checked as it is read (:mod:`avi.runs.rundir`): a damaged one is a one-line error, and a
run that an ``avi fit`` is still writing is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from avi.atomic import atomic_write_bytes, save_figure
from avi.runs.rundir import (
    EVALUATION,
    EVALUATION_SCHEMA,
    GAPS_SCHEMA,
    read_config,
    read_json,
    read_metrics,
    require_run,
    run_status,
)

__all__ = ["METRICS_COMPARED", "best_of", "collect", "to_markdown", "write_comparison"]

#: (key, label, which direction is better)
METRICS_COMPARED: tuple[tuple[str, str, str], ...] = (
    ("train_elbo", "train ELBO", "max"),
    ("val_elbo", "validation ELBO", "max"),
    ("test_elbo", "test ELBO", "max"),
    ("test_log_likelihood", "test log p(x) (IWAE)", "max"),
    ("approximation_gap", "approximation gap", "min"),
    ("amortization_gap", "amortization gap", "min"),
    ("active_units", "active units", "max"),
    ("epochs", "epochs", "none"),
    ("train_seconds", "training time (s)", "min"),
)


def collect(run_dir: str | Path) -> dict[str, Any]:
    """The comparable numbers of one run (missing ones are absent) and its status
    (:func:`~avi.runs.rundir.run_status`: an interrupted run is compared as far as it got)."""
    run_dir = require_run(run_dir, checkpoint=False, stopped=True)
    config = read_config(run_dir)
    out: dict[str, Any] = {
        "run": str(run_dir),
        "model": config.model.name,
        "strategy": config.inference.strategy,
        "family": config.inference.family,
        "objective": config.objective.name,
        "status": run_status(run_dir),
    }
    rows = read_metrics(run_dir)
    if rows:
        last = rows[-1]
        out.update(train_elbo=last["train_elbo"], val_elbo=last["val_elbo"], epochs=last["epoch"])
        out["train_seconds"] = last["wall_seconds"]
        if last.get("active_units") is not None:
            out["active_units"] = last["active_units"]
    if (run_dir / EVALUATION).exists():
        evaluation = read_json(run_dir / EVALUATION, EVALUATION_SCHEMA)
        out["test_elbo"] = evaluation["elbo"]
        out["test_log_likelihood"] = evaluation["log_likelihood"]
        if "active_units" in evaluation:
            out["active_units"] = evaluation["active_units"]
    gaps = run_dir / f"gaps-{out['family']}-test.json"  # the run's own family, not another q* family's
    if gaps.exists():
        g = read_json(gaps, GAPS_SCHEMA)
        out["approximation_gap"], out["amortization_gap"] = g["approximation_gap"], g["amortization_gap"]
    return out


def best_of(runs: list[dict[str, Any]], key: str, direction: str) -> int | None:
    """Index of the best run for ``key`` (None if no direction, or fewer than two runs have a
    finite value of it: a NaN, such as the validation ELBO of a run without validation data,
    is never best)."""
    if direction == "none":
        return None
    values = [(i, r[key]) for i, r in enumerate(runs) if r.get(key) is not None and math.isfinite(r[key])]
    if len(values) < 2:
        return None
    pick = max if direction == "max" else min
    return pick(values, key=lambda item: item[1])[0]


def _format(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def to_markdown(runs: list[dict[str, Any]]) -> str:
    """A Markdown table, one column per run, the best value of each row in bold."""
    header = "| metric | " + " | ".join(f"{Path(r['run']).name} ({r['strategy']}, {r['family']})" for r in runs) + " |"
    lines = [header, "|---|" + "---|" * len(runs)]
    for key, label, direction in METRICS_COMPARED:
        if all(r.get(key) is None for r in runs):
            continue
        best = best_of(runs, key, direction)
        cells = [f"**{_format(r.get(key))}**" if i == best else _format(r.get(key)) for i, r in enumerate(runs)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(runs: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """Write ``comparison.md`` and ``comparison.png`` (validation ELBO curves of all runs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "comparison.md"
    atomic_write_bytes(markdown, to_markdown(runs).encode())
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for r in runs:
        rows = read_metrics(Path(r["run"]))  # checked by collect
        if rows:
            ax.plot([row["epoch"] for row in rows], [row["val_elbo"] for row in rows], marker="o",
                    label=f"{Path(r['run']).name} ({r['strategy']}, {r['family']})")  # fmt: skip
    ax.set(xlabel="epoch", ylabel="validation ELBO (nats per point)", title="Runs compared")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figure = out_dir / "comparison.png"
    save_figure(fig, figure, 110)
    return markdown, figure
