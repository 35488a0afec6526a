"""The tables of ``avi report``: the summary the page opens with, the metrics grouped by split,
the inference gaps and the config by section; each built as plain rows from a run's files, then
written as HTML by :func:`table_html`.

The summary reads whatever an evaluation holds: the IWAE-k log-likelihood, its standard error
and k, the jackknife-debiased estimate with its 95% interval, and Pareto k-hat entries under any
key holding ``khat`` or ``pareto_k`` (their median and share over
:data:`~avi.evaluation.psis.KHAT_THRESHOLD` where it can tell them apart); what is missing reads
"not computed". The metrics tables hold measurements only: how an evaluation ran (k, points,
strings such as ``stderr_method``) goes to a table of settings, its warnings to notes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from avi.evaluation.flow_use import IN_USE, layers_in_use, unused_layers_warning
from avi.evaluation.psis import KHAT_THRESHOLD, KhatSummary, khat_summary, khat_warning
from avi.runs.config import TrainConfig
from avi.runs.rundir import json_text, last_diagnosed
from avi.runs.train import WORSENED, train_objective_worsened

__all__ = [
    "EVALUATION_SETTINGS",
    "SPLITS",
    "Summary",
    "collapse_warning",
    "config_sections",
    "gaps_table",
    "khat_entries",
    "kl_series",
    "metrics_by_split",
    "metrics_table",
    "summary",
    "table_html",
]

SPLITS = ("train", "validation", "test")
#: keys of evaluation.json that say how it ran rather than what it measured
EVALUATION_SETTINGS = (
    "n", "data", "k", "strategy", "precision", "processes", "inference_seconds", "sampling_seconds", "seconds",
    "cubo_order", "checkpoint_epoch",
)  # fmt: skip
#: the first rows of the metrics table, in this order; the others follow as the files list them
FIRST_METRICS = (
    "elbo", "reconstruction", "kl", "objective", "log_likelihood", "log_likelihood_stderr", "log_likelihood_debiased",
    "log_likelihood_debiased_stderr", "log_likelihood_interval_low", "log_likelihood_interval_high",
    "pareto_k_median", f"pareto_k_share_over_{KHAT_THRESHOLD}",
)  # fmt: skip
#: Cov_x(E_q[z_k | x]) above which latent dimension k is active (Burda et al. 2016)
ACTIVE_THRESHOLD = 0.01
#: a table's rows: a heading and its cells
Rows = list[tuple[str, list[str]]]


class Summary(NamedTuple):
    """The page's opening table, (label, value) rows, and the warnings shown above it."""

    rows: list[tuple[str, str]]
    warnings: list[str]


def fmt(value: Any, spec: str = ".4g") -> str:
    """A cell: a float in ``spec``, "not finite" for JSON null, anything else as it is."""
    if value is None:
        return "not finite"
    return format(value, spec) if isinstance(value, float) else str(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary(
    rows: list[dict[str, Any]],
    evaluations: list[dict[str, Any]],
    gaps: list[dict[str, Any]],
    *,
    run: str,
    status: str,
    latent_dim: int,
    train: TrainConfig | None = None,
) -> Summary:
    """The headline numbers of a run (``run`` names it in the hints): how training ended; of the
    first of ``evaluations`` (the most careful), the log-likelihood with k and its standard error,
    the debiased estimate with its 95% interval (marked unreliable where k-hat is warned about)
    and k-hat, with a line for the others; the ELBO with its reconstruction and KL terms
    (evaluated, else the last epoch's validation values); active units (evaluated, else of the
    last epoch that recorded the collapse diagnostics); a finite flow's layers in use
    (evaluated); and the inference gaps. Warns where the training objective got worse
    (:func:`~avi.runs.train.train_objective_worsened` under ``train``, default settings where None)."""
    last = rows[-1]
    evaluation = evaluations[0] if evaluations else {}
    out = [("training", f"{status} after {last['epoch']} epochs, {fmt(last['wall_seconds'], '.0f')} s")]
    khat, khat_warned = _khat(evaluation)
    if evaluations:
        out.append((f"log p(x), IWAE {_evaluated_on(evaluation)}", _estimate(evaluation, "log_likelihood")))
        out += _debiased_rows(evaluation, unreliable=khat_warned is not None)
    else:
        out.append(("log p(x)", f"not computed: run avi evaluate {run}"))
    if len(evaluations) > 1:
        others = "; ".join(f"{_evaluated_on(e)}: {_estimate(e, 'log_likelihood')}" for e in evaluations[1:])
        out.append(("other evaluations", others))
    out.append(("Pareto k-hat of the importance weights", khat))
    out += _bound_rows(last, evaluation)
    units, collapsed = _active_units(last_diagnosed(rows), evaluation, latent_dim)
    out.append(units)
    flow, unused = _flow_layers(evaluation)
    out += flow
    out += _gap_rows(gaps, run)
    worsened = WORSENED if train_objective_worsened(rows, train or TrainConfig()) else None
    return Summary(out, [w for w in (khat_warned, collapsed, unused, worsened) if w])


def _evaluated_on(evaluation: dict[str, Any]) -> str:
    """ "k=50 (test split, 40 points)": the samples and data of an evaluation, and the
    checkpoint where it was not the last (", best checkpoint, epoch 7")."""
    points = f", {evaluation['n']:,} points" if _number(evaluation.get("n")) else ""
    best = evaluation.get("checkpoint") == "best"
    checkpoint = f", best checkpoint, epoch {evaluation.get('checkpoint_epoch', '?')}" if best else ""
    return f"k={evaluation.get('k', '?')} ({evaluation.get('data', 'test split')}{points}{checkpoint})"


def _estimate(evaluation: dict[str, Any], key: str) -> str:
    """ "-97.54 ± 0.0053": an evaluation's ``key`` with its standard error ``<key>_stderr``."""
    se = evaluation.get(f"{key}_stderr")
    stderr = f" ± {fmt(se, '.2g')}" if _number(se) else " (standard error not computed)"
    return fmt(evaluation[key], ".2f") + stderr


def _debiased_rows(evaluation: dict[str, Any], *, unreliable: bool) -> list[tuple[str, str]]:
    """The jackknife-debiased log-likelihood with its standard error and the 95% interval for
    log p(x) (debiased ± 1.96 se), where the evaluation saved them; ``unreliable`` marks it so."""
    if "log_likelihood_debiased" not in evaluation:
        return []
    text = _estimate(evaluation, "log_likelihood_debiased")
    interval = evaluation.get("log_likelihood_interval")
    if isinstance(interval, list) and len(interval) == 2 and all(_number(v) for v in interval):
        text += f"; 95% interval {interval[0]:.2f} to {interval[1]:.2f}"
    if unreliable:
        text += " (unreliable: see the k-hat warning)"
    return [("log p(x), jackknife-debiased", text)]


def khat_entries(evaluation: dict[str, Any]) -> dict[str, Any]:
    """evaluation.json's Pareto k-hat entries, whatever their names: keys holding ``khat``,
    ``k_hat`` or ``pareto_k``, a dict among them flattened one level (``pareto_k: {median: m}``
    -> ``pareto_k_median``), and a list of per-point values (NaN or null where a point has none)
    summarised as ``<key>_median`` and ``<key>_share`` over the threshold
    (:func:`~avi.evaluation.psis.khat_summary`)."""
    found: dict[str, Any] = {}
    for key, value in evaluation.items():
        if any(name in key.lower() for name in ("khat", "k_hat", "pareto_k")):
            found.update(_khat_entry(key, value))
    return found


def _khat_entry(key: str, value: Any) -> dict[str, Any]:
    """One k-hat entry of an evaluation as flat scalars (see :func:`khat_entries`)."""
    if isinstance(value, dict):
        return {f"{key}_{k}": v for k, v in value.items() if not isinstance(v, (list, dict))}
    if not isinstance(value, list):
        return {key: value}
    if not value or not all(v is None or _number(v) for v in value):
        return {}
    points = khat_summary(torch.tensor([math.nan if v is None else float(v) for v in value]))
    return {f"{key}_median": points.median, f"{key}_share": points.share_over}


def _khat(evaluation: dict[str, Any]) -> tuple[str, str | None]:
    """The k-hat cell of the summary, and a warning (one saved with the evaluation, or
    :func:`~avi.evaluation.psis.khat_warning`'s from the median and share)."""
    entries = khat_entries(evaluation)
    numbers = {k: v for k, v in entries.items() if _number(v)}
    warning = next((v for v in entries.values() if isinstance(v, str)), None)
    if _named(numbers, ("points",)) == 0:
        return "not computed: no point had weights enough to fit a tail (k < 21)", warning
    median, share = _named(numbers, ("median",)), _named(numbers, ("share", "frac"))
    if median is None or share is None:
        return ", ".join(f"{k} {fmt(v)}" for k, v in numbers.items()) or "not computed", warning
    text = f"median {median:.2f}; {100 * share:.1f}% of points over {KHAT_THRESHOLD}"
    return text, warning or khat_warning(KhatSummary(median, share, 0))


def _named(numbers: dict[str, float], words: tuple[str, ...]) -> float | None:
    """The first of ``numbers`` whose key holds one of ``words``."""
    return next((v for k, v in numbers.items() if any(w in k for w in words)), None)


def _bound_rows(last: dict[str, Any], evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    """The ELBO and its reconstruction and KL terms: evaluation's (test), else the last epoch's
    validation values."""
    terms = ("elbo", "reconstruction", "kl")
    if "elbo" in evaluation:
        source, values = "test", [evaluation.get(k, "not computed") for k in terms]
    else:
        source, values = f"validation, epoch {last['epoch']}", [last.get(f"val_{k}", "not computed") for k in terms]
    names = (f"ELBO ({source})", "reconstruction E_q[log p(x|z)]", "KL(q(z|x) || p(z))")
    return [(name, fmt(value, ".2f")) for name, value in zip(names, values, strict=True)]


def collapse_warning(active: int, dims: int) -> str | None:
    """A warning where some of ``dims`` latent dimensions are inactive (``active`` are active)."""
    if active >= dims:
        return None
    if active == 0:
        return (
            f"Posterior collapse: none of the {dims} latent dimensions is active (Cov_x E_q[z_k|x] > "
            f"{ACTIVE_THRESHOLD} for none): q(z|x) ignores x. The collapse remedies ([remedies]) may help."
        )
    return (
        f"Partial collapse: {dims - active} of {dims} latent dimensions are inactive (Cov_x E_q[z_k|x] <= "
        f"{ACTIVE_THRESHOLD}): they carry no information about x."
    )


def _active_units(
    row: Mapping[str, Any], evaluation: dict[str, Any], latent_dim: int
) -> tuple[tuple[str, str], str | None]:
    """The active-units row (test, else the validation points at the epoch of ``row``, the
    last metrics row with the collapse diagnostics) and its collapse warning."""
    if _number(evaluation.get("active_units")):
        active, source = int(evaluation["active_units"]), "test"
        dims = len(evaluation.get("kl_per_dim") or []) or latent_dim
    elif _number(row.get("active_units")):
        active, source = int(row["active_units"]), f"validation, epoch {row['epoch']}"
        dims = sum(key.startswith("kl_dim_") for key in row) or latent_dim
    else:
        return ("active units", "not computed: the run recorded no collapse diagnostics"), None
    return (f"active units ({source})", f"{active} of {dims}"), collapse_warning(active, dims)


def _flow_layers(evaluation: dict[str, Any]) -> tuple[list[tuple[str, str]], str | None]:
    """The row of a finite flow's layers in use (none for other families or an evaluation that
    did not measure them) and the warning for those that only shift q."""
    reshaping = evaluation.get("flow_layer_reshaping")
    if not isinstance(reshaping, list) or not reshaping or not all(_number(r) for r in reshaping):
        return [], None
    in_use = f"{layers_in_use(reshaping)} of {len(reshaping)} (reshaping q by more than {IN_USE})"
    row = ("flow layers in use (test)", in_use)
    return [row], unused_layers_warning(reshaping)


def _gap_rows(gaps: list[dict[str, Any]], run: str) -> list[tuple[str, str]]:
    """One row per saved gap decomposition, or one saying how to compute them."""
    if not gaps:
        return [("inference gaps", f"not computed: run avi gaps {run}")]
    return [
        (
            f"inference gaps, {g['family']} ({g['split'] or g['data']}, n={g['n']})",
            f"approximation {_with_stderr(g, 'approximation_gap')}, amortization {_with_stderr(g, 'amortization_gap')}",
        )
        for g in gaps
    ]


def _with_stderr(row: dict[str, Any], key: str) -> str:
    se = row.get(f"{key}_stderr")
    return fmt(row[key], ".3f") + (f" ± {fmt(se, '.2g')}" if _number(se) else "")


def metrics_by_split(last: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The last epoch's metrics and evaluation.json's, grouped: ``train_`` and ``val_`` columns
    under train and validation without their prefix, with the collapse diagnostics of the
    validation points (active units, mutual information); the rest of the epoch's row (epoch,
    timings, learning rate) under run. Of the evaluation (:func:`_flat`): its measurements under
    test; how it ran (:data:`EVALUATION_SETTINGS`, and any string or flag) under evaluation; its
    warnings, where it raised any, under notes. KL per dimension is left out: its figure shows it."""
    groups: dict[str, dict[str, Any]] = {name: {} for name in (*SPLITS, "run", "evaluation", "notes")}
    for key, value in last.items():
        if not key.startswith("kl_dim_") and not (value is None and _diagnostic(key)):  # blank: not recorded
            group, name = _epoch_group(key)
            groups[group][name] = value
    for key, value in _flat(evaluation).items():
        if key.endswith("_warning"):
            groups["notes"].update({key: value} if value else {})
        elif key in EVALUATION_SETTINGS or isinstance(value, (str, bool)):
            groups["evaluation"][key] = value
        else:
            groups["test"][key] = value
    return groups


def _epoch_group(key: str) -> tuple[str, str]:
    """The group of a metrics.csv column and its name there (see :func:`metrics_by_split`)."""
    if key.startswith("train_"):
        return "train", key.removeprefix("train_")
    if key.startswith("val_"):
        return "validation", key.removeprefix("val_")
    return ("validation" if _diagnostic(key) else "run"), key


def _diagnostic(key: str) -> bool:
    """Whether a metrics.csv column is one of the collapse diagnostics of the validation points."""
    return key in ("active_units", "mutual_information") or key.startswith(("active_units_layer_", "kl_dim_"))


def _flat(evaluation: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's entries as scalars: a dict's scalars as ``<key>_<name>`` (``pareto_k:
    {median: m}`` -> ``pareto_k_median``), an interval [low, high] as ``<key>_low`` and
    ``<key>_high``; other lists (KL per dimension) left out."""
    flat: dict[str, Any] = {}
    for key, value in evaluation.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": v for k, v in value.items() if not isinstance(v, (list, dict))})
        elif isinstance(value, list):
            flat.update(dict(zip((f"{key}_low", f"{key}_high"), value, strict=True)) if _interval(key, value) else {})
        else:
            flat[key] = value
    return flat


def _interval(key: str, value: list[Any]) -> bool:
    return key.endswith("_interval") and len(value) == 2 and all(v is None or _number(v) for v in value)


def metrics_table(groups: dict[str, dict[str, Any]]) -> tuple[list[str], Rows]:
    """The header and rows of the metrics table: one row per metric, one column per split that
    has any (the rows of :data:`FIRST_METRICS` first)."""
    splits = [s for s in SPLITS if groups[s]]
    names = list(dict.fromkeys(name for s in splits for name in groups[s]))
    names.sort(key=lambda n: FIRST_METRICS.index(n) if n in FIRST_METRICS else len(FIRST_METRICS))
    rows = [(name, [fmt(groups[s][name]) if name in groups[s] else "" for s in splits]) for name in names]
    return ["metric", *splits], rows


def kl_series(rows: Sequence[Mapping[str, Any]], evaluation: dict[str, Any]) -> dict[str, list[float]]:
    """KL per latent dimension: the validation points' (``kl_dim_k`` columns) at the last epoch of
    ``rows`` that recorded the collapse diagnostics, and the test split's (evaluation's
    ``kl_per_dim``), where the run has them; NaN where a value was not finite."""
    last = last_diagnosed(rows)
    dims = sorted((k for k in last if k.startswith("kl_dim_")), key=lambda k: int(k.removeprefix("kl_dim_")))
    series: dict[str, list[float]] = {}
    if dims:
        series[f"validation, epoch {last['epoch']}"] = [math.nan if last[k] is None else float(last[k]) for k in dims]
    if isinstance(evaluation.get("kl_per_dim"), list) and evaluation["kl_per_dim"]:
        series["test"] = [math.nan if v is None else float(v) for v in evaluation["kl_per_dim"]]
    return series


def gaps_table(gaps: list[dict[str, Any]]) -> tuple[list[str], Rows]:
    """One row per gap decomposition: its data, log p(x), both ELBOs and both gaps (with their
    standard errors where saved), in nats per point."""
    header = ["family", "data", "points", "log p(x)", "ELBO of q*", "ELBO of the encoder"]
    header += ["approximation gap", "amortization gap"]
    rows = [
        (
            str(g["family"]),
            [str(g["split"] or g["data"]), str(g["n"])]
            + [fmt(g[key], ".3f") for key in ("log_likelihood", "elbo_optimal", "elbo_amortized")]
            + [_with_stderr(g, "approximation_gap"), _with_stderr(g, "amortization_gap")],
        )
        for g in gaps
    ]
    return header, rows


def config_sections(config: dict[str, Any], defaults: dict[str, Any]) -> list[tuple[str, list[tuple[str, str, bool]]]]:
    """Each table of a config (``model``, ``data``, ...) as rows (key, value as TOML writes it,
    whether it differs from ``defaults``); top-level values that are not tables under ``run``."""
    tables = {name: value for name, value in config.items() if isinstance(value, dict)}
    loose = {name: value for name, value in config.items() if not isinstance(value, dict)}
    sections = [(name, _config_rows(values, defaults.get(name, {}))) for name, values in tables.items()]
    return sections + ([("run", _config_rows(loose, defaults))] if loose else [])


def _config_rows(values: dict[str, Any], defaults: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(key, _toml(value), key not in defaults or defaults[key] != value) for key, value in values.items()]


def _toml(value: Any) -> str:
    """A config value as a TOML file would write it; unset (None) as "unset"."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json_text(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def table_html(header: list[str] | None, rows: Rows, *, caption: str = "", bold: set[str] | None = None) -> str:
    """An HTML table: a header row where given, each row a heading cell then its cells (numbers
    right-aligned), the rows named in ``bold`` emphasised."""
    head = "" if header is None else "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    changed = ' class="changed"'
    body = "".join(
        f"<tr{changed if bold and name in bold else ''}><th>{html.escape(name)}</th>"
        + "".join(f"<td{_align(cell)}>{html.escape(cell)}</td>" for cell in cells)
        + "</tr>"
        for name, cells in rows
    )
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}{head}{body}</table>"


def _align(cell: str) -> str:
    try:
        float(cell.split(" ± ")[0])
    except ValueError:
        return ""
    return ' class="num"'
