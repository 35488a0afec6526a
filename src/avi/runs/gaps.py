"""``avi gaps``: the inference gap of a trained run split into approximation and amortization gaps."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from avi.atomic import save_figure
from avi.data.files import load_array_file
from avi.errors import ConfigError
from avi.evaluation.gaps import Progress, check_decomposable, gap_decomposition, q_star_converged
from avi.families.posterior import Posterior
from avi.inference.fit import fit
from avi.runs.build import build_posterior, prepare_data
from avi.runs.config import FAMILY_NAMES, Config, resolve_config
from avi.runs.hooks import LearningRate
from avi.runs.load import TrainedRun, load_trained
from avi.runs.report_figures import gaps_figure
from avi.runs.rundir import GAPS_SCHEMA, read_gaps, read_json, require_run, write_json

__all__ = ["merge_gaps", "plot_gaps", "run_gaps"]

#: MiB of working memory for log p(x) when the config sets no ``evaluate.memory_budget``: AIS
#: keeps every chain's activations for its gradient, and 100 points of 5,000 chains of the
#: 784-400-20 VAE would take 18 GiB
MEMORY_BUDGET = 1024.0
#: the largest count of samples, steps or points: the largest integer of torch's 64-bit sizes
MAX_COUNT = 2**63 - 1


def run_gaps(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    family: str | None = None,
    k: int | None = None,
    split: str = "test",
    points: int | None = 1000,
    first: int = 0,
    steps: int = 1000,
    encoder_epochs: int = 10,
    encoder_settings: Mapping[str, Any] | None = None,
    ais_steps: int = 0,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Decompose the inference gap of the run's posterior on ``points`` points of ``split``
    (``train`` or ``test``) or of the file ``data``, from its point ``first`` on (0-based; so a
    long decomposition can be done in pieces, as benchmarks/reproduce_cremer.py does). log p(x)
    is exact where the model has it, else annealed importance sampling with ``ais_steps`` steps
    (k chains) if ``ais_steps`` > 0, else the IWAE bound with k samples; either in chunks that
    fit ``evaluate.memory_budget`` MiB (:data:`MEMORY_BUDGET` when unset).

    With a ``family`` other than the run's, a new amortized encoder of that family is first
    trained for ``encoder_epochs`` epochs against the run's fixed model (as Cremer et al. do;
    with the run's optimiser and learning-rate schedule, :func:`_new_encoder`), with the run's
    inference settings but for ``encoder_settings`` (inference keys, e.g.
    ``{"flow_centred": True}``; refused where ``family`` is the run's own, or where one does not
    apply to it), which the result records.
    ``q_star_converged`` says whether ``steps`` were enough (:func:`gap_decomposition`'s check);
    ``on_progress`` hears how the decomposition goes on. Writes ``gaps-FAMILY-SPLIT.json`` and
    the figure ``gaps.png`` into the run directory. A run that an ``avi fit`` is still writing
    is refused, as is one whose saved decompositions (which the figure draws) are damaged.
    """
    _check_options(family, split, {
        "k": (k, 1, "a positive integer"),
        "AIS steps": (ais_steps, 0, "non-negative (0 uses the IWAE bound)"),
        "points": (points, 1, "a positive integer"),
        "first": (first, 0, "non-negative"),
        "steps": (steps, 0, "non-negative"),
        "encoder epochs": (encoder_epochs, 0, "non-negative"),
    })  # fmt: skip
    run = load_trained(require_run(run_dir, stopped=True))
    config = run.config
    family = family or config.inference.family
    settings = _encoder_settings(config, family, dict(encoder_settings or {}))
    saved = Path(run_dir) / f"gaps-{family}-{split if data is None else 'file'}.json"
    _check_saved(Path(run_dir), saved)
    x, source = _points(run, data, split, points, first)
    check_decomposable(run.posterior, x)
    started = time.perf_counter()
    run.model.requires_grad_(False)
    own = family == config.inference.family
    posterior = run.posterior if own else _new_encoder(run, family, encoder_epochs, settings)
    gaps = gap_decomposition(
        run.model, posterior, x, k=k or config.evaluate.k, steps=steps, ais_steps=ais_steps,
        memory_budget=config.evaluate.memory_budget or MEMORY_BUDGET, on_progress=on_progress,
    )  # fmt: skip
    result = {
        "family": family, "encoder_settings": settings, "split": split if data is None else None, "data": source,
        "first": first, "n": x.shape[0], **gaps._asdict(), "refine_steps": steps, "ais_steps": ais_steps,
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    write_json(saved, result)
    plot_gaps(Path(run_dir))
    return result


def merge_gaps(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """One decomposition of all the points of ``pieces``, :func:`run_gaps`'s results on disjoint
    points of one run with one family and settings: each mean the pieces' means weighted by
    their point counts n_i / n, each standard error sqrt(sum_i (n_i / n)^2 se_i^2) (the pieces'
    estimates are independent), ``q_star_converged`` by :func:`gap_decomposition`'s rule on the
    combined refine gain (each piece checks its first points), times summed."""
    n = sum(piece["n"] for piece in pieces)
    weights = [piece["n"] / n for piece in pieces]

    def mean(key: str) -> float:
        return sum(w * piece[key] for w, piece in zip(weights, pieces, strict=True))

    def stderr(key: str) -> float:
        return math.sqrt(sum((w * piece[key]) ** 2 for w, piece in zip(weights, pieces, strict=True)))

    result = pieces[0] | {"n": n, "seconds": sum(piece["seconds"] for piece in pieces)}
    result |= {key: mean(key) for key in ("log_likelihood", "elbo_optimal", "elbo_amortized", "approximation_gap",
                                           "amortization_gap", "refine_gain")}  # fmt: skip
    result |= {key: stderr(key) for key in ("approximation_gap_stderr", "amortization_gap_stderr",
                                             "refine_gain_stderr")}  # fmt: skip
    result["q_star_converged"] = result["refine_steps"] > 0 and q_star_converged(
        result["refine_gain"], result["refine_gain_stderr"]
    )
    return result


def _encoder_settings(config: Config, family: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` checked as the inference settings of a new encoder of ``family``: only with a
    family other than the run's, each a setting that applies to it (validated as ``avi fit``
    validates its own)."""
    if not settings:
        return settings
    if family == config.inference.family:
        raise ConfigError(
            f"encoder settings apply to a new encoder, which avi gaps trains only with a family other than "
            f"the run's ({family!r}): give --family"
        )
    checked = resolve_config({"inference": {**settings, "family": family, "strategy": "amortized"}}, explicit=True)
    return {key: getattr(checked.inference, key) for key in settings}


def _check_saved(run_dir: Path, replaced: Path) -> None:
    """Read every decomposition saved in the run directory but ``replaced`` (which this one
    overwrites), so that a damaged one fails before the work rather than at the figure."""
    for path in sorted(run_dir.glob("gaps-*.json")):
        if path != replaced:
            read_json(path, GAPS_SCHEMA)


def _check_options(family: str | None, split: str, counts: dict[str, tuple[int | None, int, str]]) -> None:
    """Raise :class:`ConfigError` for an option outside its range, before anything loads:
    ``counts`` maps a name to (value, its least value, what the least means), each at most
    :data:`MAX_COUNT`."""
    if family is not None and family not in FAMILY_NAMES:
        raise ConfigError(f"unknown variational family {family!r}; choose from {list(FAMILY_NAMES)}")
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}; choose 'train' or 'test'")
    for name, (value, least, meaning) in counts.items():
        if value is not None and value < least:
            raise ConfigError(f"{name} must be {meaning}, got {value}")
        if value is not None and value > MAX_COUNT:
            raise ConfigError(f"{name} must be at most 2^63 - 1 (a count torch can hold), got {value}")


def _points(run: TrainedRun, data: str | Path | None, split: str, points: int | None, first: int) -> tuple[Tensor, str]:
    """``points`` points (all where None) from the point ``first`` on of the file ``data``
    (binarised as the run's data, seed + 1) or of ``split`` (the training split with one fixed
    binarisation, seed + 2), on the run's device, checked against the model; and where they
    come from."""
    config = run.config
    if data is not None:
        x_np, _ = load_array_file(data)
        dataset = prepare_data(x_np, config, f"data file {data}").binarized(config.data.seed + 1)
        source = str(data)
    else:
        dataset = run.splits.test if split == "test" else run.splits.train.binarized(config.data.seed + 2)
        source = f"{split} split"
    if first >= len(dataset.x):
        raise ConfigError(f"first point {first} is past the last of the {len(dataset.x)} points of the {source}")
    x = dataset.x[first : None if points is None else first + points].to(run.device)
    run.model.check_data(x, source)
    return x, source


def _new_encoder(run: TrainedRun, family: str, epochs: int, settings: dict[str, Any]) -> Posterior:
    """A new amortized encoder of ``family`` (the run's inference settings but for ``settings``,
    checked by :func:`_encoder_settings`) trained on the ELBO for ``epochs`` epochs on the
    training split against the run's fixed model, with the run's optimiser: its batch size, Adam
    epsilon and learning-rate schedule, warm-up and decay spanning the ``epochs``. (At the peak
    rate from the first step and without the decay, a planar encoder on a trained MNIST decoder
    diverged in its 20th epoch: ELBO -96 to -28,096.)"""
    values = run.config.model_dump()
    values["inference"] |= {"family": family, "strategy": "amortized"} | settings
    values["train"] |= {"epochs": max(epochs, 1), "lr_warmup": min(run.config.train.lr_warmup, epochs)}
    values["remedies"] = {}  # the plain ELBO: the run's KL weighting served its own training
    config = resolve_config(values)
    train = config.train  # the run's, its schedule spanning the encoder's epochs
    posterior = build_posterior(config, run.model, 0).to(run.device)
    fit(run.model, posterior, run.splits.train.to(run.device), epochs=epochs, batch_size=train.batch_size,
        lr=train.lr, adam_eps=train.adam_eps, train_model=False, hooks=[LearningRate(train)])  # fmt: skip
    return posterior


def plot_gaps(run_dir: Path) -> Path:
    """gaps.png: the approximation and amortization gaps of every saved decomposition, each with
    its 95% interval (the report's figure, :func:`avi.runs.report_figures.gaps_figure`)."""
    path = run_dir / "gaps.png"
    save_figure(gaps_figure(read_gaps(run_dir)), path, 120)
    return path
