"""``avi fit``: train from a config into a run directory, with checkpoints and resume."""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from avi.data.dataset import Dataset
from avi.errors import ConfigError, RunError
from avi.evaluation.bounds import elbo_per_point
from avi.inference.aggressive import aggressive_epoch
from avi.inference.fit import EpochStats, compile_step, make_optimizers, train_epoch
from avi.inference.local import LocalPosterior
from avi.inference.parallel import ShardStep, data_parallel
from avi.inference.refine import refine_params
from avi.models.base import LatentVariableModel
from avi.precision import full_precision, resolve_precision, set_precision
from avi.runs import distributed
from avi.runs.build import build_baseline, build_model, build_objective, build_posterior, load_splits, regularise
from avi.runs.collapse import aggressive_next, diagnostics_row, epoch_objective, plot_collapse
from avi.runs.config import Config, learning_rate
from avi.runs.rundir import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    SUMMARY,
    MetricsTable,
    read_config,
    require_run,
    write_checkpoint,
    write_json,
)
from avi.runs.tracking import open_trackers

__all__ = [
    "ProgressHook",
    "TrainedRun",
    "available_device",
    "default_run_dir",
    "infer_posterior",
    "load_trained",
    "resolve_device",
    "run_fit",
]

#: called as hook(epoch, examples_done, examples_total, running_objective_sums) on the main rank
ProgressHook = Callable[[int, int, int, Tensor], None]


@dataclass
class TrainedRun:
    """A run's objects, as built from its config and restored from its checkpoint."""

    config: Config
    model: LatentVariableModel
    posterior: nn.Module
    splits: Any
    device: torch.device


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda[:i]`` or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'auto'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def available_device(name: str) -> torch.device:
    """The device ``name`` where this machine has it, else the CPU."""
    try:
        return resolve_device(name)
    except ConfigError:
        return torch.device("cpu")


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.model.name}-{config.inference.strategy}"


def _build(config: Config, device: torch.device | None = None) -> TrainedRun:
    device = resolve_device(config.train.device) if device is None else device
    torch.manual_seed(config.train.seed)
    splits = load_splits(config)
    model = build_model(config, splits.train.dim)
    for name, split in zip(("training", "validation", "test"), splits):
        if len(split) and not split.dynamic:
            model.check_data(split.x, f"{name} data")
    posterior = build_posterior(config, model, len(splits.train))
    return TrainedRun(config, model.to(device), posterior.to(device), splits, device)


def load_trained(run_dir: str | Path, device: torch.device | None = None) -> TrainedRun:
    """Rebuild a run's model and posterior on ``device`` and load the weights of its last
    checkpoint; by default on the device it trained on, or the CPU where this machine lacks it
    (a run trained on a GPU can be evaluated and reported on a machine without one)."""
    run_dir = require_run(run_dir)
    config = read_config(run_dir)
    run = _build(config, available_device(config.train.device) if device is None else device)
    _load_weights(run, _load_state(run_dir / CHECKPOINT), run_dir)
    run.posterior.eval()  # loaded for evaluation: training-only behaviour (a denoising encoder's noise) off
    return run


def infer_posterior(run: TrainedRun, x: Tensor) -> nn.Module:
    """The run's posterior for the new points x (N, D), indexed 0..N-1: an amortized one as it is;
    a per-datapoint one refined for ``inference.infer_steps`` steps in blocks of
    ``inference.infer_block`` points, each block's noise seeded by (``train.seed``, its first
    point). Under torchrun each process refines its shard of the blocks and the tables are
    gathered, so every process holds the posterior one process would have inferred."""
    posterior = run.posterior
    if not isinstance(posterior, LocalPosterior):
        return posterior
    settings, n = run.config.inference, x.shape[0]
    rows = distributed.shard(n, settings.infer_block)
    mine = refine_params(
        run.model,
        posterior.family,
        x[rows.start : rows.stop],
        posterior.family.initial_params(len(rows)).to(device=x.device, dtype=x.dtype),
        steps=settings.infer_steps,
        lr=settings.local_lr,
        batch_size=settings.infer_block,
        seed=run.config.train.seed,
        first_index=rows.start,
    )
    return LocalPosterior(n, posterior.family, initial=distributed.gather_shards(mine, n, settings.infer_block))


def _load_weights(
    run: TrainedRun, state: dict[str, Any], run_dir: Path, optimizers: Sequence[torch.optim.Optimizer] = ()
) -> None:
    """Load a checkpoint's model, posterior (and optimiser) states; a mismatch is one line."""
    try:
        run.model.load_state_dict(state["model"])
        run.posterior.load_state_dict(state["posterior"])
        for opt, opt_state in zip(optimizers, state["optimizers"] if optimizers else ()):
            opt.load_state_dict(opt_state)
    except (RuntimeError, ValueError, KeyError) as err:
        raise RunError(f"checkpoint of {run_dir} does not match its config: {str(err).splitlines()[0]}") from None


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which, in one line
        raise RunError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None


def _validate(run: TrainedRun, validation_params: Tensor | None) -> tuple[dict[str, float], Tensor | None]:
    """Mean validation ELBO terms, each process scoring its shard of the points (the sums
    all-reduced). A per-datapoint run first refines its shard of the validation table (warm
    start); the refined table is gathered on every process."""
    data = run.splits.validation
    n = len(data)
    if n == 0:
        return {"val_elbo": float("nan"), "val_reconstruction": float("nan"), "val_kl": float("nan")}, None
    rows = distributed.shard(n)
    x = data.x[rows.start : rows.stop].to(run.device)
    posterior = run.posterior
    if isinstance(posterior, LocalPosterior):
        if validation_params is None:
            validation_params = posterior.family.initial_params(n).to(run.device)
        local = refine_params(
            run.model,
            posterior.family,
            x,
            validation_params[rows.start : rows.stop],
            steps=run.config.inference.validation_steps,
            lr=run.config.inference.local_lr,
        )
        validation_params = distributed.gather_shards(local, n)
        posterior = LocalPosterior(len(rows), posterior.family, initial=local)
    sums = torch.zeros(3, device=run.device)
    if len(rows):
        sums += torch.stack(elbo_per_point(run.model, posterior, x)).sum(dim=1)
    value, reconstruction, kl = (distributed.all_reduce_sum(sums) / n).tolist()
    return {"val_elbo": value, "val_reconstruction": reconstruction, "val_kl": kl}, validation_params


#: points of the per-epoch collapse diagnostics: the mutual-information estimate compares every
#: pair in a batch, which for an inverse autoregressive flow costs a pass per latent dimension
DIAGNOSTIC_POINTS = 1000


def _diagnostics(run: TrainedRun, validation_params: Tensor | None) -> dict[str, Any]:
    """Collapse diagnostics on the first 1,000 validation points (on the first 1,000 training
    points, with a fixed binarisation, when there is no validation split); computed by the main
    process alone, the one that writes them."""
    data, posterior = run.splits.validation, run.posterior
    if len(data) == 0:
        data = run.splits.train.subset(slice(0, DIAGNOSTIC_POINTS)).binarized(run.config.data.seed + 2)
    elif isinstance(posterior, LocalPosterior):
        posterior = LocalPosterior(len(data), posterior.family, initial=validation_params)
    x = data.x[:DIAGNOSTIC_POINTS].to(run.device)
    return diagnostics_row(run.model, posterior, x, seed=run.config.train.seed)


def _row(epoch: int, stats: EpochStats, val: dict[str, float], wall: float) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_objective": stats.objective,
        "train_elbo": stats.elbo,
        "train_reconstruction": stats.reconstruction,
        "train_kl": stats.kl,
        **val,
        "epoch_seconds": stats.seconds,
        "examples_per_second": stats.examples / stats.seconds if stats.seconds > 0 else float("nan"),
        "wall_seconds": wall,
    }


def run_fit(
    config: Config | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    epochs: int | None = None,
    threads: int | None = None,
    compile: bool | None = None,
    progress: ProgressHook | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train as ``config`` says into ``run_dir``, checkpointing after every epoch.

    With ``resume=True`` the config is read from ``run_dir`` and training continues after the
    last checkpointed epoch. ``epochs`` stops training after that many epochs in all, instead of
    ``config.train.epochs`` (a run can be extended, or trained in parts; fewer than a resumed
    run has done is an error, and without it a run extended earlier stays so); ``threads`` sets
    torch's intra-op threads for this call instead of ``config.train.threads`` (a resumed run on
    another machine); ``compile`` likewise sets ``config.train.compile`` for this call (a resumed
    run may train compiled or not; Inductor draws its own noise, so the two do not follow the same
    path sample for sample). Returns the run directory.
    """
    if resume:
        if run_dir is None:
            raise ConfigError("resuming needs the run directory")
        run_dir = require_run(run_dir)
        config = read_config(run_dir)
    else:
        config = config or Config()
        run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
        if (run_dir / CHECKPOINT).exists():
            raise RunError(f"run directory {run_dir} already holds a run; resume it with --resume {run_dir}")
    last_epoch = config.train.epochs if epochs is None else epochs
    if last_epoch < 0:
        raise ConfigError(f"epochs must be non-negative, got {last_epoch}")
    threads = config.train.threads if threads is None else threads
    if threads is not None:
        torch.set_num_threads(threads)
    if distributed.init_from_env(resolve_device(config.train.device), config.train.batch_size):
        atexit.register(distributed.shutdown)
    if distributed.world_size() > 1 and config.remedies.aggressive:
        raise ConfigError("aggressive encoder training runs in a single process; start it without torchrun")
    run = _build(config)
    main = distributed.is_main()
    precision, fallback = resolve_precision(config.train.precision, run.device)
    if fallback is not None and main:
        print(f"note: {fallback}", file=sys.stderr)
    set_precision(precision, run.model, run.posterior)  # training steps only: metrics and evaluation in fp32
    generator = torch.Generator().manual_seed(config.train.seed)
    optimizers = make_optimizers(
        run.model, run.posterior, lr=config.train.lr, local_lr=config.inference.local_lr, eps=config.train.adam_eps
    )
    # a score-function control variate: its state is checkpointed, a learned one (NVIL) trained
    baseline = build_baseline(config, run.model.data_dim)
    if baseline is not None:
        baseline.to(run.device)
        if list(baseline.parameters()):
            optimizers.append(torch.optim.Adam(baseline.parameters(), lr=config.train.lr, eps=config.train.adam_eps))
    # the networks' optimisers (model and encoder, NVIL's baseline) follow train.lr_schedule; a
    # per-datapoint table keeps its own local_lr
    scheduled = [opt for opt in optimizers if isinstance(opt, torch.optim.Adam)]
    rows: list[dict[str, Any]] = []
    validation_params: Tensor | None = None
    start_epoch, wall_before = 0, 0.0
    if resume:
        state = _load_state(run_dir / CHECKPOINT)
        _load_weights(run, state, run_dir, optimizers)
        if baseline is not None and state.get("baseline") is not None:  # checkpoints before baselines were saved: none
            try:
                baseline.load_state_dict(state["baseline"])
            except RuntimeError as err:
                raise RunError(
                    f"checkpoint of {run_dir} does not match its config: {str(err).splitlines()[0]}"
                ) from None
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if run.device.type == "cuda" and state.get("cuda_rng") is not None:  # the GPU's draws continue too
            torch.cuda.set_rng_state(state["cuda_rng"], run.device)
        rows, start_epoch = state["metrics"], state["epoch"]
        if epochs is None:  # a run extended by an earlier --epochs is not cut back to its config's
            last_epoch = max(last_epoch, start_epoch)
        elif last_epoch < start_epoch:
            raise ConfigError(
                f"run {run_dir} has done {start_epoch} epochs: resuming it needs epochs >= {start_epoch}, got {last_epoch}"
            )
        validation_params = state.get("validation_params")
        if validation_params is not None:
            validation_params = validation_params.to(run.device)
        wall_before = rows[-1]["wall_seconds"] if rows else 0.0
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, config.model_dump())
    parallel: dict[str, Any] = {}
    if distributed.world_size() > 1:  # gradients averaged by DDP; other ranks' noise decorrelated from rank 0's
        parallel["step"] = data_parallel(run.model, run.posterior, baseline)
        if not main:
            torch.manual_seed(config.train.seed + 7919 * distributed.rank() + start_epoch)
    train: Dataset = run.splits.train.to(run.device)
    if config.train.compile if compile is None else compile:
        if config.inference.strategy != "amortized":  # a resumed run of another strategy
            raise ConfigError(f"compile applies to the amortized strategy, not {config.inference.strategy!r}")
        step = parallel["step"] if "step" in parallel else ShardStep(run.model, run.posterior, baseline)
        parallel["step"] = compile_step(step, train)
    if main:
        write_json(run_dir / SUMMARY, {"status": "running", "epochs_done": start_epoch, "epochs": last_epoch})
    objective = build_objective(config, baseline=baseline)
    trackers = open_trackers(config, run_dir, rows) if main else []
    metrics = MetricsTable(run_dir / METRICS)
    if main and rows:  # a kill between the checkpoint and the table's write left the table a row short
        metrics.write(rows)
    started = time.perf_counter()
    for epoch in range(start_epoch + 1, last_epoch + 1):
        for opt in scheduled:
            for group in opt.param_groups:
                group["lr"] = learning_rate(config.train, epoch)
        hook = None
        if progress is not None and main:
            hook = lambda done, sums, e=epoch: progress(e, done, len(train), sums)  # noqa: E731
        optimised, kl_weight = epoch_objective(config, epoch, objective)
        optimised = regularise(config, optimised, run.posterior)  # after a remedy's reweighting, so both apply
        aggressive = aggressive_next(config, rows)
        common = {
            "objective": optimised,
            "batch_size": config.train.batch_size,
            "generator": generator,
            "on_progress": hook,
        }
        if aggressive:
            stats, encoder_steps = aggressive_epoch(
                run.model, run.posterior, train, optimizers, baseline=baseline, **common
            )
        else:
            stats, encoder_steps = train_epoch(
                run.model, run.posterior, train, optimizers, rank=distributed.rank(),
                world_size=distributed.world_size(), **common, **parallel,
            ), 0  # fmt: skip
        with full_precision(run.model, run.posterior):  # metrics in fp32 whatever the training precision
            val, validation_params = _validate(run, validation_params)
            # rank 0 writes them; the one reader of past rows' diagnostics (aggressive training's
            # schedule) runs in a single process
            diagnostics = _diagnostics(run, validation_params) if main else {}
        rows.append(
            {
                **_row(epoch, stats, val, wall_before + time.perf_counter() - started),
                "kl_weight": kl_weight,
                "aggressive": int(aggressive),
                "encoder_steps": encoder_steps,
                **diagnostics,
            }
        )
        if main:
            write_checkpoint(
                run_dir / CHECKPOINT,
                {
                    "model": run.model.state_dict(),
                    "posterior": run.posterior.state_dict(),
                    "optimizers": [opt.state_dict() for opt in optimizers],
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
                    "metrics": rows,
                    "epoch": epoch,
                    "validation_params": validation_params,
                    "baseline": None if baseline is None else baseline.state_dict(),
                },
            )
            metrics.write(rows)
            write_json(run_dir / SUMMARY, {"status": "running", "epochs_done": epoch, "epochs": last_epoch})
            for tracker in trackers:
                tracker.log(rows[-1])
            if on_epoch is not None:
                on_epoch(rows[-1])
    for tracker in trackers:
        tracker.close()
    if main:
        if rows and "kl_dim_0" in rows[-1]:
            plot_collapse(run_dir)
        final = rows[-1] if rows else {}
        write_json(
            run_dir / SUMMARY,
            {
                "status": "finished",
                "epochs_done": len(rows),
                "epochs": last_epoch,
                "train_elbo": final.get("train_elbo"),
                "val_elbo": final.get("val_elbo"),
                "wall_seconds": final.get("wall_seconds", 0.0),
                "precision": precision,
                "parameters": sum(p.numel() for p in run.model.parameters())
                + sum(p.numel() for p in run.posterior.parameters()),
            },
        )
    return Path(run_dir)
