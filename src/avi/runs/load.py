"""Runs as objects: a config built into data, model and posterior; a run directory loaded back.

``load_run(path)`` gives any run, made by ``avi fit`` or from Python, as its config, model,
posterior and metrics. Building draws the networks' initial weights from a generator seeded by
the run's seed inside :func:`avi.seeding.seeded`, so loading a run leaves the global random
state as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avi.data.dataset import Splits
from avi.errors import ConfigError, RunError
from avi.families.posterior import PointInference, Posterior
from avi.inference.averaging import load_averaged
from avi.inference.state import checkpoint_mismatch, load_weights
from avi.models.base import LatentVariableModel
from avi.runs import distributed
from avi.runs.build import build_model, build_posterior, load_splits
from avi.runs.config import Config, check_device
from avi.runs.memory import MODEL_SIZES, settings_of, sized_by
from avi.runs.rundir import BEST, CHECKPOINT, read_checkpoint, read_config, read_metrics, require_run
from avi.seeding import seeded

__all__ = [
    "CHECKPOINTS",
    "LoadedRun",
    "TrainedRun",
    "available_device",
    "build_run",
    "default_run_dir",
    "infer_posterior",
    "load_run",
    "load_trained",
    "resolve_device",
]

#: the checkpoints of a run by name: the last epoch's, and the best validation epoch's (early stopping)
CHECKPOINTS = {"last": CHECKPOINT, "best": BEST}


@dataclass
class TrainedRun:
    """A run's objects, as built from its config (and restored from its checkpoint, of epoch
    ``epoch``; None where built fresh)."""

    config: Config
    model: LatentVariableModel
    posterior: Posterior
    splits: Splits
    device: torch.device
    epoch: int | None = None


@dataclass
class LoadedRun:
    """What :func:`load_run` returns: the run's config, model and posterior (weights of its last
    checkpoint, in evaluation mode), its metrics (one dict per finished epoch), its directory,
    and its data splits."""

    path: Path
    config: Config
    model: LatentVariableModel
    posterior: Posterior
    metrics: list[dict[str, Any]]
    splits: Splits


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available), where this machine has it;
    any other name is a :class:`ConfigError` (:func:`~avi.runs.config.check_device`)."""
    if check_device(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is available")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():  # before torch's 8-bit index
        raise ConfigError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device(name)


def available_device(name: str) -> torch.device:
    """The device ``name`` where this machine has it, else the CPU."""
    try:
        return resolve_device(name)
    except ConfigError:
        return torch.device("cpu")


def default_run_dir(config: Config) -> Path:
    """``runs/<time>-<model>-<strategy>``; a user's model is named by its class."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    model = config.model.name.rpartition(":")[2]
    return Path("runs") / f"{stamp}-{model}-{config.inference.strategy}"


def build_run(config: Config, device: torch.device | None = None) -> TrainedRun:
    """Data splits, model and posterior of ``config`` on ``device`` (default the config's). The
    data are checked against the model; the initial weights come from the global generator
    (``avi fit`` seeds it with ``train.seed`` first; :func:`load_run` builds inside
    :func:`~avi.seeding.seeded`, leaving it untouched)."""
    device = resolve_device(config.train.device) if device is None else device
    splits = load_splits(config)
    with sized_by(settings_of(config, MODEL_SIZES)):
        model = build_model(config, splits.train.dim, splits.train.x)
        for name, split in zip(("training", "validation", "test"), splits, strict=True):
            if len(split) and not split.dynamic:
                model.check_data(split.x, f"{name} data")
        posterior = build_posterior(config, model, len(splits.train))
        return TrainedRun(config, model.to(device), posterior.to(device), splits, device)


def load_trained(run_dir: str | Path, device: torch.device | None = None, checkpoint: str = "last") -> TrainedRun:
    """Rebuild a run's model and posterior on ``device`` and load the weights of its
    ``checkpoint`` (:data:`CHECKPOINTS`: "last", checkpoint.pt, or "best", the best validation
    epoch's best.pt that early stopping keeps), its epoch in ``epoch``; by default on the device
    it trained on, or the CPU where this machine lacks it (a run trained on a GPU can be
    evaluated and reported on a machine without one). A run that averaged its weights
    (``train.ema_decay``) is loaded with the averaged ones. The global random state is left as it was."""
    run_dir = require_run(run_dir)
    path = run_dir / _checkpoint_file(run_dir, checkpoint)
    config = read_config(run_dir)
    with seeded(config.train.seed):
        run = build_run(config, available_device(config.train.device) if device is None else device)
    saved = read_checkpoint(path)
    load_weights(run.model, run.posterior, saved, f"checkpoint {path}")
    if saved.get("averaged") is not None:
        with checkpoint_mismatch(f"checkpoint {path}"):
            load_averaged(run.model, run.posterior, saved["averaged"])
    run.epoch = saved["epoch"]
    run.posterior.eval()  # loaded for evaluation: training-only behaviour (a denoising encoder's noise) off
    return run


def _checkpoint_file(run_dir: Path, checkpoint: str) -> str:
    """The file of the checkpoint named ``checkpoint``; one line where the name is unknown or
    the run has no best checkpoint."""
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"unknown checkpoint {checkpoint!r}; choose last or best")
    if checkpoint == "best" and not (run_dir / BEST).is_file():
        raise RunError(
            f"run {run_dir} has no {BEST}: a run keeps its best checkpoint when trained with --early-stop PATIENCE"
        )
    return CHECKPOINTS[checkpoint]


def load_run(path: str | Path, device: str | torch.device | None = None) -> LoadedRun:
    """Any run directory as objects: its config, model, posterior (last checkpoint, evaluation
    mode), metrics and data splits, on ``device`` (default: the run's, or the CPU where this
    machine lacks it). The global random state is left as it was."""
    run = load_trained(path, None if device is None else torch.device(device))
    return LoadedRun(Path(path), run.config, run.model, run.posterior, read_metrics(Path(path)), run.splits)


def infer_posterior(run: TrainedRun, x: Tensor) -> Posterior:
    """The run's posterior for the new points x (N, D), indexed 0..N-1: an amortized one as it is;
    one with per-point parameters inferred for ``inference.infer_steps`` steps in blocks of
    ``inference.infer_block`` points, each block's noise seeded by (``train.seed``, its first
    point). Under torchrun each process infers its shard of the blocks and the parameters are
    gathered, so every process holds the posterior one process would have inferred."""
    posterior = run.posterior
    settings, n = run.config.inference, x.shape[0]
    rows = distributed.shard(n, settings.infer_block)
    how = PointInference(
        steps=settings.infer_steps,
        lr=settings.local_lr,
        block=settings.infer_block,
        seed=run.config.train.seed,
        first_index=rows.start,
    )
    mine = posterior.infer_params(run.model, x[rows.start : rows.stop], how)
    if mine is None:
        return posterior
    return posterior.for_params(distributed.gather_shards(mine, n, settings.infer_block))
