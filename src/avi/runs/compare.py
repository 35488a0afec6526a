"""``avi compare RUN_DIR RUN_DIR ...``: the key metrics of several runs side by side.

Each run contributes what it has: its data (the config's ``data.source`` and ``binarize``),
final training and validation ELBO from its metrics, test ELBO, KL and log-likelihood from its
most careful ``avi evaluate`` (:func:`~avi.runs.rundir.best_evaluation`, with the k and the
data it used), gaps from ``avi gaps``, active units where recorded, and training time. Where
the runs differ in data, in the data they were evaluated on, or in k, a one-line warning says
so. A row is marked only where more or less is better (:data:`METRICS_COMPARED`), and every run
tied with the best value is marked. Every file is checked as it is read
(:mod:`avi.runs.rundir`): a damaged one is a one-line error, and a run that an ``avi fit`` is
still writing is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

from matplotlib.figure import Figure

from avi.atomic import atomic_write_bytes, save_figure
from avi.runs.config import Config
from avi.runs.rundir import (
    GAPS_SCHEMA,
    best_evaluation,
    last_diagnosed,
    read_config,
    read_json,
    read_metrics,
    require_run,
    run_status,
)

__all__ = [
    "METRICS_COMPARED",
    "TIE_STDERRS",
    "Row",
    "best_runs",
    "collect",
    "comparison",
    "comparison_warnings",
    "table_cells",
    "to_markdown",
    "write_comparison",
]


class Row(NamedTuple):
    """A row of the comparison: the key of a run's value, its label, which way is better
    ("higher", "lower", or None: no direction, never marked) and the key of the value's
    standard error where runs have one."""

    key: str
    label: str
    better: str | None
    stderr: str | None = None


#: The rows compared and which way each is better, the one table of directions. Bounds and
#: log-likelihoods are better higher; gaps and training time lower. KL, active units and epochs
#: have no direction (more KL or more active units is not a better fit), nor the rows that say
#: what a run is: its data, the data it was evaluated on, and k.
METRICS_COMPARED: tuple[Row, ...] = (
    Row("data", "data", None),
    Row("evaluation_data", "evaluated on", None),
    Row("k", "IWAE samples k", None),
    Row("train_elbo", "train ELBO", "higher"),
    Row("val_elbo", "validation ELBO", "higher"),
    Row("test_elbo", "test ELBO", "higher"),
    Row("test_log_likelihood", "test log p(x) (IWAE)", "higher", "test_log_likelihood_stderr"),
    Row("test_kl", "test KL", None),
    Row("approximation_gap", "approximation gap", "lower"),
    Row("amortization_gap", "amortization gap", "lower"),
    Row("active_units", "active units", None),
    Row("epochs", "epochs", None),
    Row("train_seconds", "training time (s)", "lower"),
)

#: decimals shown of a float; values equal when rounded to them are tied
DIGITS = 2
#: values with standard errors are tied where they differ by at most this many standard errors
#: of the difference, sqrt(se_a^2 + se_b^2): about a two-sided 5% test
TIE_STDERRS = 2.0

#: what differs between runs that makes their numbers incomparable, and what it means
_DIFFERENCES = (
    ("data", "runs differ in data ({}): no number compares across them"),
    ("evaluation_data", "runs were evaluated on different data ({}): their test numbers do not compare"),
    ("k", "runs were evaluated with different k ({}): IWAE log p(x) rises with k, so evaluate them at one k"),
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
        "data": _data_of(config),
    }
    rows = read_metrics(run_dir)
    if rows:
        last = rows[-1]
        out.update(train_elbo=last["train_elbo"], val_elbo=last["val_elbo"], epochs=last["epoch"])
        out["train_seconds"] = last["wall_seconds"]
        if diagnostics := last_diagnosed(rows):
            out["active_units"] = diagnostics["active_units"]
    out.update(_evaluated(run_dir))
    gaps = run_dir / f"gaps-{out['family']}-test.json"  # the run's own family, not another q* family's
    if gaps.exists():
        g = read_json(gaps, GAPS_SCHEMA)
        out["approximation_gap"], out["amortization_gap"] = g["approximation_gap"], g["amortization_gap"]
    return out


def _data_of(config: Config) -> str:
    """The data a run was trained on, in words: its source and binarisation."""
    return f"{config.data.source}, binarize {config.data.binarize}"


def _evaluated(run_dir: Path) -> dict[str, Any]:
    """The numbers of the run's most careful evaluation, with its k and data; {} where none."""
    evaluation = best_evaluation(run_dir)
    if evaluation is None:
        return {}
    names = {
        "data": "evaluation_data", "k": "k", "elbo": "test_elbo", "kl": "test_kl",
        "log_likelihood": "test_log_likelihood", "log_likelihood_stderr": "test_log_likelihood_stderr",
        "active_units": "active_units",
    }  # fmt: skip
    return {ours: evaluation[theirs] for theirs, ours in names.items() if theirs in evaluation}


def _number(value: Any) -> TypeGuard[float]:
    """Whether ``value`` is a finite number (a NaN, such as the validation ELBO of a run without
    validation data, is never best)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _tied(a: dict[str, Any], b: dict[str, Any], row: Row) -> bool:
    """Whether runs a and b are tied on ``row``: equal when rounded to the decimals shown, or,
    where both have a standard error, within :data:`TIE_STDERRS` standard errors of the difference."""
    x, y = a[row.key], b[row.key]
    if round(x, DIGITS) == round(y, DIGITS):
        return True
    se_a, se_b = (r.get(row.stderr) if row.stderr else None for r in (a, b))
    return _number(se_a) and _number(se_b) and abs(x - y) <= TIE_STDERRS * math.hypot(se_a, se_b)


def best_runs(runs: list[dict[str, Any]], row: Row) -> list[int]:
    """Indices of every run tied for the best value of ``row`` (:func:`_tied` with the best);
    none where the row has no direction or fewer than two runs have a finite value of it."""
    if row.better is None:
        return []
    values = [(i, r[row.key]) for i, r in enumerate(runs) if _number(r.get(row.key))]
    if len(values) < 2:
        return []
    pick = max if row.better == "higher" else min
    best = runs[pick(values, key=lambda item: item[1])[0]]
    return [i for i, _ in values if _tied(runs[i], best, row)]


def comparison_warnings(runs: list[dict[str, Any]]) -> list[str]:
    """One line for each way the runs differ that makes their numbers incomparable: their data,
    the data they were evaluated on, their k (runs without an evaluation are left out)."""
    warnings = []
    for key, message in _DIFFERENCES:
        having = [r for r in runs if r.get(key) is not None]
        if len({r[key] for r in having}) > 1:
            warnings.append(message.format("; ".join(f"{Path(r['run']).name}: {r[key]}" for r in having)))
    return warnings


def _format(run: dict[str, Any], row: Row) -> str:
    """The value of ``row`` for ``run`` as shown, with its standard error where it has one."""
    value = run.get(row.key)
    if value is None:
        return "-"
    text = f"{value:.{DIGITS}f}" if isinstance(value, float) else str(value)
    stderr = run.get(row.stderr) if row.stderr else None
    return f"{text} ± {stderr:.2g}" if _number(stderr) else text


def table_cells(runs: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, bool]]]]:
    """The rows of the comparison that some run has: the label, then per run the value as shown
    and whether it is (tied for) the best."""
    table = []
    for row in METRICS_COMPARED:
        if all(r.get(row.key) is None for r in runs):
            continue
        best = best_runs(runs, row)
        table.append((row.label, [(_format(r, row), i in best) for i, r in enumerate(runs)]))
    return table


def comparison(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparison as one JSON object: the runs, the runs tied for best of each row with a
    direction, and the warnings."""
    best = {row.key: [runs[i]["run"] for i in chosen] for row in METRICS_COMPARED if (chosen := best_runs(runs, row))}
    return {"runs": runs, "best": best, "warnings": comparison_warnings(runs)}


def to_markdown(runs: list[dict[str, Any]]) -> str:
    """The warnings, then a Markdown table, one column per run, every best value in bold."""
    warnings = "".join(f"**warning:** {line}\n\n" for line in comparison_warnings(runs))
    header = "| metric | " + " | ".join(f"{Path(r['run']).name} ({r['strategy']}, {r['family']})" for r in runs) + " |"
    lines = [header, "|---|" + "---|" * len(runs)]
    for label, cells in table_cells(runs):
        lines.append(f"| {label} | " + " | ".join(f"**{text}**" if best else text for text, best in cells) + " |")
    return warnings + "\n".join(lines) + "\n"


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
