"""The ``avi`` command: a thin layer over :mod:`avi.runs`.

Every input error is printed as one line on standard error with exit code 2; Ctrl-C, as one
line saying what was kept, with exit code 130.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.metadata
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from avi.cli_options import FIT_FLAGS, Flag, changed_on_resume, overrides, parameters, parse_set
from avi.errors import AviError, ConfigError
from avi.interrupts import sigint_handled
from avi.runs.paths import check_output_dir
from avi.runs.progress import Reporter, reporter

if TYPE_CHECKING:
    from torch import Tensor

    from avi.runs.config import Config

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False)
console = Console(stderr=True)

#: the exit code of Ctrl-C: 128 + SIGINT, as shells give
INTERRUPTED = 130

#: the lines :func:`_interrupted` printed (typer ends a Ctrl-C while it parses with no word)
_interrupt_lines: list[str] = []


#: the ``--json`` switch of the commands that print a result
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on standard output.")]


def _print_json(obj: Any) -> None:
    """``obj`` as one line of strict JSON on standard output (NaN as null)."""
    from avi.runs.rundir import json_text

    print(json_text(obj))


def _print_error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    _print_error(message)
    raise typer.Exit(2)


def _interrupted(kept: str) -> typer.Exit:
    """Ctrl-C: one line saying what was ``kept``; the exit, code :data:`INTERRUPTED`, to raise."""
    _interrupt_lines.append(f"interrupted; {kept}")
    console.print(escape(_interrupt_lines[-1]), highlight=False, soft_wrap=True)
    return typer.Exit(INTERRUPTED)


def _interruptible(kept: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Make Ctrl-C anywhere in a command :func:`_interrupted` with ``kept``: typer's own handling
    exits 130 without a word. Every file avi writes is written whole or not at all
    (:mod:`avi.atomic`), so an interrupt leaves each one as it was or as it was to be. torch,
    which every command uses, is imported first, Ctrl-C ending it at once (:func:`_quit`)."""

    def declare(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)  # the signature (flags included) stays the command's
        def interruptible(*args: Any, **kwargs: Any) -> None:
            try:
                with sigint_handled(_quit):
                    import torch  # noqa: F401
                command(*args, **kwargs)
            except KeyboardInterrupt:
                raise _interrupted(kept) from None

        return interruptible

    return declare


def _quit(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C while torch is imported, before the command has done anything: exit at once. A
    KeyboardInterrupt raised within torch's C++ start-up would abort the process or be lost."""
    _interrupted("nothing was done")
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(INTERRUPTED)


@app.callback(invoke_without_command=True)
def _root(
    context: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print avi's version and exit.")] = False,
) -> None:
    """Amortized variational inference: fit and evaluate latent-variable models."""
    if version:
        print(f"avi {importlib.metadata.version('avi')}")
    elif context.invoked_subcommand is None:
        print(context.get_help())
    else:
        return
    raise typer.Exit(0)


def _with_flags(flags: tuple[Flag, ...]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command, whose ``**flags`` receives them, one keyword parameter per flag of the
    table, after its positional parameters and before its own keyword ones (help lists them so)."""

    def declare(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        positional = [p for p in own if p.kind is not p.KEYWORD_ONLY]
        keyword = [p for p in own if p.kind is p.KEYWORD_ONLY]
        command.__signature__ = signature.replace(parameters=[*positional, *parameters(flags), *keyword])  # type: ignore[attr-defined]
        return command

    return declare


def _listed(words: list[str]) -> str:
    """``words`` as a list in prose: ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(words[:-1]), *words[-1:]]))


#: the flags that ``avi fit --resume`` takes, in words: "--epochs, --lr, ... and --threads"
_RESUMABLE = _listed([flag.option for flag in FIT_FLAGS if flag.resumable])


@app.command()
@_interruptible("no run was started")
@_with_flags(FIT_FLAGS)
def fit(
    config: Annotated[Path | None, typer.Argument(help="TOML config file; flags override it.")] = None,
    *,
    out: Annotated[
        Path | None, typer.Option(help="Run directory to create (default: runs/DATE-TIME-MODEL-STRATEGY).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help=f"Continue the run in this directory (with only {_RESUMABLE} given).")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Set any config key, nested tables too (--set model.args.hidden=64); VALUE is read as TOML, "
            "else as text. Repeatable; applied after the other flags.",
        ),
    ] = None,
    **flags: Any,
) -> None:
    """Train a model and its posterior; write config, metrics, checkpoint and summary to a run directory."""
    from avi.runs.distributed import is_main
    from avi.runs.train import run_fit

    try:
        resolved, run_dir = _fit_config(config, out, resume, settings or [], flags)
    except AviError as err:
        _fail(str(err))
    try:
        with _TrainingProgress() as progress:
            run_dir = run_fit(
                resolved,
                run_dir,
                resume=resume is not None,
                epochs=flags["epochs"] if resume is not None else None,  # a fresh run takes --epochs from its config
                compile=flags["compile"],  # with --resume: compiled or not, whatever the run's config says
                lr=flags["lr"] if resume is not None else None,  # a resumed run's new rate
                lr_schedule=flags["lr_schedule"] if resume is not None else None,  # and schedule
                diagnostics_every=flags["diagnostics_every"] if resume is not None else None,
                progress=progress.update,
                on_epoch=progress.epoch_done,
            )
    except AviError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        from avi.runs.rundir import CONFIG

        if not (run_dir / CONFIG).is_file():  # stopped before the run directory was written
            raise _interrupted("no run was started") from None
        raise _interrupted(f"{run_dir} keeps its finished epochs: continue with avi fit --resume {run_dir}") from None
    if not is_main():  # under torchrun, rank 0 alone speaks
        return
    _fit_done(run_dir, idle=resume is not None and progress.epochs == 0)
    print(run_dir)


def _fit_done(run_dir: Path, *, idle: bool) -> None:
    """The last lines of ``avi fit`` on standard error: where the run is, and, where its
    summary says so, that the training objective got worse or the validation bound was still
    improving; or, for a resumed run that trained no epoch (``idle``) because it had done all of
    them or a stopping rule had ended it, one line saying how to go on."""
    from avi.runs.rundir import SUMMARY, SUMMARY_SCHEMA, read_json
    from avi.runs.train import WORSENED

    try:
        summary = read_json(run_dir / SUMMARY, SUMMARY_SCHEMA)
    except AviError as err:
        _fail(str(err))
    done = summary.get("epochs_done")
    if idle and summary["status"] == "finished" and done == summary.get("epochs"):
        _say(f"{run_dir} has finished its {done} epoch{'s' * (done != 1)}; add --epochs M (M > {done}) to train on")
        return
    if idle and summary["status"] == "finished":
        rule = "a stopping rule ended it"
        if summary.get("converged"):
            rule = f"the plateau schedule converged at epoch {summary.get('converged_epoch')}"
        if "best_epoch" in summary:
            rule = f"early stopping; best epoch {summary['best_epoch']}"
        _say(f"{run_dir} stopped at epoch {done} ({rule}); give --lr or --lr-schedule to train on")
        return
    if summary.get("train_objective_worsened"):
        _say(WORSENED)
    if summary.get("val_elbo_improving"):
        more = f"avi fit --resume {run_dir} --epochs M, M > {summary['epochs_done']}"
        _say(f"the validation bound was still improving: more epochs may help ({more})")
    console.print(
        f"run directory: [bold]{escape(str(run_dir))}[/]  (next: avi evaluate {escape(str(run_dir))})",
        highlight=False,
        soft_wrap=True,
    )


def _say(line: str) -> None:
    """One plain line on standard error, never wrapped."""
    console.print(escape(line), highlight=False, soft_wrap=True)


def _fit_config(
    config: Path | None, out: Path | None, resume: Path | None, settings: list[str], flags: dict[str, Any]
) -> tuple[Config | None, Path]:
    """The resolved config of a fresh run and its directory, or ``None`` and the run to resume,
    whose config only the resumable flags may touch."""
    from avi.runs.config import load_config, merge_tables
    from avi.runs.load import default_run_dir
    from avi.runs.rundir import read_config, require_run

    if resume is not None:
        changed = ["config"] * (config is not None) + changed_on_resume(FIT_FLAGS, flags)
        changed += ["--out"] * (out is not None) + ["--set"] * bool(settings)
        if changed:
            raise ConfigError(
                f"--resume continues a run as configured; it cannot change {', '.join(changed)} (only {_RESUMABLE})"
            )
        # a run stopped before its first checkpoint resumes too (from epoch 0)
        _set_threads(flags["threads"] or read_config(require_run(resume, checkpoint=False)).train.threads)
        return None, resume
    resolved = load_config(config, merge_tables(overrides(FIT_FLAGS, flags), parse_set(settings)))
    _set_threads(resolved.train.threads)
    return resolved, out if out is not None else default_run_dir(resolved)


def _set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process: ``threads`` (``train.threads``, ``--threads``),
    else the cores other processes leave free (:func:`avi.cli_threads.choose_threads`); one line
    of warning when the threads given oversubscribe the machine."""
    import torch

    from avi.cli_threads import choose_threads

    chosen, warning = choose_threads(threads, torch.get_num_threads())
    torch.set_num_threads(chosen)
    if warning is not None:
        console.out(warning, highlight=False)


#: the ``--threads`` option of the commands other than fit, bounded as ``train.threads`` is
ThreadsFlag = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=4096,
        help="Intra-op threads of this process, 1 to 4096 (default: the cores that other processes leave free).",
    ),
]


class _TrainingProgress:
    """Each epoch's progress (examples, running objective, examples per second; on a terminal a
    live bar, elsewhere a plain line only every 30 s) and its summary, one line."""

    def __init__(self) -> None:
        self.reporter = reporter(console, "examples", parts=None)
        self.epoch = 0
        #: the epochs finished in this call
        self.epochs = 0

    def __enter__(self) -> _TrainingProgress:
        self.reporter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.reporter.__exit__(*exc)

    def update(self, epoch: int, done: int, total: int, sums: Tensor) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.reporter.start(f"epoch {epoch}", total)
        # one host read per refresh shown, not per step
        self.reporter.update(done, total, lambda: f"objective {sums[0].item() / done:9.2f}")

    def epoch_done(self, row: dict[str, Any]) -> None:
        self.epochs += 1
        self.reporter.line(_epoch_line(row))


def _epoch_line(row: dict[str, Any]) -> str:
    """An epoch's summary: its bounds, seconds and, where measured, active units, mutual
    information and a finite flow's layers in use."""
    return (
        f"epoch {row['epoch']:>3}  train ELBO {row['train_elbo']:9.2f}  KL {row['train_kl']:7.2f}  "
        f"val ELBO {row['val_elbo']:9.2f}  {row['epoch_seconds']:6.1f} s"
        + (
            f"  AU {row['active_units']}{_layers(row)}  MI {row['mutual_information']:.2f}"
            if "active_units" in row
            else ""
        )
        + (f"  flow layers in use {row['flow_layers_in_use']}" if "flow_layers_in_use" in row else "")
    )


def _layers(row: dict[str, Any]) -> str:
    """Active units per latent layer, as Burda et al.'s "(16+5)", where there are several."""
    counts = [str(row[key]) for key in row if key.startswith("active_units_layer_")]
    return f" ({'+'.join(counts)})" if len(counts) > 1 else ""


#: the ``--checkpoint`` option of ``avi evaluate``
CheckpointFlag = Annotated[
    str,
    typer.Option(
        help="Which checkpoint to score: last (checkpoint.pt, the last epoch) or best (best.pt, the best "
        "validation epoch, kept by avi fit --early-stop); each keeps its own evaluation files."
    ),
]


@app.command()
@_interruptible("saved evaluations are as they were")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by avi fit.")],
    data: Annotated[
        Path | None, typer.Option(help="Evaluate on this .npy/.npz/.csv file instead of the test split.")
    ] = None,
    k: Annotated[
        int | None, typer.Option(help="Importance samples per point (default: the run's evaluate.k, 5000).")
    ] = None,
    cubo: Annotated[
        bool, typer.Option("--cubo", help="Also estimate the chi upper bound CUBO (ELBO <= log p(x) <= CUBO).")
    ] = False,
    consistency: Annotated[
        bool,
        typer.Option(
            "--consistency", help="Also report consistency KLs under translation/rotation and a linear-probe accuracy."
        ),
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (default: the run's device).")] = None,
    precision: Annotated[
        str, typer.Option(help="fp32, or bf16: a Bernoulli MLP decoder in bfloat16, log-weights in fp32.")
    ] = "fp32",
    memory_budget: Annotated[
        float | None,
        typer.Option(help="MiB of working memory for the importance sampling (per process); sizes its chunks."),
    ] = None,
    checkpoint: CheckpointFlag = "last",
    compile: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Run a Bernoulli MLP decoder's log-density through torch.compile (a few seconds to compile; "
            "faster in bf16).",
        ),
    ] = False,
    threads: ThreadsFlag = None,
    as_json: JsonFlag = False,
) -> None:
    """Test ELBO and importance-sampled log-likelihood (IWAE bound with k samples) of a run.

    Under torchrun each process evaluates a shard of the points; rank 0 prints and writes."""
    from avi.runs.distributed import is_main
    from avi.runs.evaluate import run_evaluate

    _set_threads(threads)
    try:
        # a bar of the points done on a terminal, else lines; rank 0 alone under torchrun
        with reporter(console, "points", transient=True, enabled=os.environ.get("RANK", "0") == "0") as progress:
            progress.start("importance sampling")
            result = run_evaluate(
                run_dir,
                data=data,
                k=k,
                cubo=cubo,
                consistency=consistency,
                device=device,
                precision=precision,
                memory_budget=memory_budget,
                checkpoint=checkpoint,
                compile=compile,
                on_batch=progress.update,
            )
    except AviError as err:
        _fail(str(err))
    if is_main():  # under torchrun, rank 0 alone speaks
        _show_evaluation(run_dir, result, precision, as_json, compile)


def _show_evaluation(
    run_dir: Path, result: dict[str, Any], precision: str, as_json: bool, compile: bool = False
) -> None:
    """``avi evaluate``'s result: a note where it ran in another ``precision`` than asked or
    uncompiled where ``compile`` was asked, the Pareto k-hat warning and that of flow layers
    that only shift q, then its table (or, ``as_json``, one JSON object)."""
    from avi.evaluation.flow_use import unused_layers_warning

    if precision != result["precision"]:
        note = f"{precision} evaluation needs native bf16 and a Bernoulli MLP decoder: ran {result['precision']}"
        console.print(note, highlight=False, soft_wrap=True)
    if compile and not result["compiled"]:
        note = "--compile applies to a Bernoulli MLP decoder's log-density: ran uncompiled"
        console.print(note, highlight=False, soft_wrap=True)
    if result["pareto_k_warning"] is not None:
        console.print(f"warning: {escape(result['pareto_k_warning'])}", highlight=False, soft_wrap=True)
    unused = unused_layers_warning(result.get("flow_layer_reshaping") or [])
    if unused is not None:
        console.print(f"warning: {escape(unused)}", highlight=False, soft_wrap=True)
    if as_json:
        _print_json(result)
        return
    Console().print(_evaluation_table(run_dir, result))


def _evaluation_table(run_dir: Path, result: dict[str, Any]) -> Table:
    """The rows of ``avi evaluate``: the bounds with their jackknife standard errors, the 95%
    interval for log p(x) and Pareto k-hat, then the consistency and collapse diagnostics;
    undefined standard errors (NaN: k < 3) left out."""
    import math

    from avi.evaluation.flow_use import layers_in_use
    from avi.evaluation.psis import KHAT_THRESHOLD

    def estimate(key: str) -> str:
        value, stderr = result[key], result[f"{key}_stderr"]
        return f"{value:.2f}" + (f" ± {stderr:.2g}" if math.isfinite(stderr) else "")

    scored = f"{result['checkpoint']} checkpoint, epoch {result['checkpoint_epoch']}"
    title = f"{run_dir} ({scored}) on {result['data']} ({result['n']} points)"
    table = Table(title=title, caption="± jackknife standard error", show_header=True)
    table.add_column("metric")
    table.add_column("nats per point", justify="right")
    table.add_row("ELBO", f"{result['elbo']:.2f}")
    table.add_row("  reconstruction", f"{result['reconstruction']:.2f}")
    table.add_row("  KL", f"{result['kl']:.2f}")
    table.add_row(f"log p(x) ≥ (IWAE k={result['k']})", estimate("log_likelihood"))
    low, high = result["log_likelihood_interval"]
    interval = f" (95%: {low:.2f} to {high:.2f})" if math.isfinite(low) and math.isfinite(high) else ""
    table.add_row("log p(x), jackknife-debiased", estimate("log_likelihood_debiased") + interval)
    if "log_likelihood_exact" in result:
        table.add_row("log p(x), exact", f"{result['log_likelihood_exact']:.2f}")
    khat = result["pareto_k"]
    share = khat[f"share_over_{KHAT_THRESHOLD}"]
    table.add_row(
        "Pareto k-hat",
        f"{khat['median']:.2f}; {100 * share:.1f}% > {KHAT_THRESHOLD}" if khat["points"] else "not computed (k < 21)",
    )
    if "cubo" in result:
        table.add_row(f"CUBO_{result['cubo_order']:g} k={result['k']} (upper bound)", estimate("cubo"))
    for name in ("translate", "rotate"):
        if f"consistency_kl_{name}" in result:
            table.add_row(f"consistency KL ({name})", f"{result[f'consistency_kl_{name}']:.3f}")
    if result.get("probe_accuracy") is not None:
        table.add_row("linear-probe accuracy", f"{100 * result['probe_accuracy']:.1f}%")
    table.add_row("I(x; z) (He et al. 2019)", f"{result['mutual_information']:.2f}")
    layers = result.get("active_units_per_layer") or []
    per_layer = f" ({'+'.join(map(str, layers))} by layer)" if len(layers) > 1 else ""
    table.add_row("active units", f"{result['active_units']}{per_layer} of {len(result['kl_per_dim'])}")
    table.add_row("KL per dimension", " ".join(f"{v:.2f}" for v in result["kl_per_dim"]))
    reshaping = result.get("flow_layer_reshaping")
    if reshaping:
        shares = " ".join(f"{r:.2g}" for r in reshaping)
        table.add_row("flow layers in use", f"{layers_in_use(reshaping)} of {len(reshaping)} (reshaping q: {shares})")
    return table


@app.command()
@_interruptible("no file was left half-written")
def compare(
    runs: Annotated[list[Path] | None, typer.Argument(help="Run directories to compare side by side.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Compare inference methods on a model instead: linear-regression, logistic-regression, "
            "normal-normal, beta-bernoulli or dirichlet-categorical."
        ),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="With --model, comma-separated: exact, mean-field-vi, full-rank-vi, mh, gibbs, nuts "
            "(default: all that apply)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for the JSON/Markdown table and the PNG figure.")] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="With --model: 2 chains, fewer draws and steps (logistic regression: 5 features); under a minute.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Compare runs (avi compare RUN_DIR RUN_DIR ...: key metrics, best marked, Markdown and a figure),
    or inference methods on one model (avi compare --model NAME: time against posterior accuracy)."""
    if runs and model:
        _fail("give run directories or --model, not both")
    try:
        check_output_dir(out or Path("runs"))  # before anything is computed
    except AviError as err:
        _fail(str(err))
    if runs:
        if methods or quick:
            _fail("--methods and --quick apply to --model; run directories are compared as they are")
        _compare_runs(runs, out or Path("runs") / "compare", as_json)
        return
    if not model:
        _fail("give run directories to compare runs, or --model NAME to compare inference methods")
    from avi.baselines.compare import format_stage, format_table, run_compare

    _set_threads(1)  # tiny tensors: more threads only spin-wait (68.7 s of CPU against 15.3 s measured)
    try:
        comparison, out_dir = run_compare(model, methods, out, quick=quick, progress=_print_stage(format_stage))
    except AviError as err:
        _fail(str(err))
    if as_json:
        _print_json(comparison.to_dict())
        return
    print(format_table(comparison))
    console.print(f"figure and JSON: [bold]{out_dir}[/]", highlight=False)


def _print_stage(format_stage: Callable[[Any], str]) -> Callable[[Any], None]:
    """Each stage of ``avi compare --model`` as one plain line on standard error, as it happens."""
    return lambda stage: print(format_stage(stage), file=sys.stderr, flush=True)


def _compare_runs(runs: list[Path], out: Path, as_json: bool) -> None:
    from avi.runs.compare import collect, comparison, table_cells, write_comparison

    try:
        collected = [collect(run) for run in runs]
        markdown, figure = write_comparison(collected, out)
    except AviError as err:
        _fail(str(err))
    result = comparison(collected)
    if as_json:
        _print_json(result)
        return
    for warning in result["warnings"]:
        console.print(f"warning: {escape(warning)}", highlight=False, soft_wrap=True)
    table = Table(title="runs compared (* marks the best value of each row and every run tied with it)")
    table.add_column("metric")
    for r in collected:
        table.add_column(escape(f"{Path(r['run']).name}\n{r['strategy']}, {r['family']}"), justify="right")
    for label, cells in table_cells(collected):
        table.add_row(label, *(f"[bold green]{escape(text)} *[/]" if best else escape(text) for text, best in cells))
    Console().print(table)
    console.print(f"Markdown: {markdown}  figure: {figure}", highlight=False)


@app.command()
@_interruptible("no file was left half-written")
def gaps(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of an amortized run.")],
    data: Annotated[Path | None, typer.Option(help="Decompose on this .npy/.npz/.csv file instead.")] = None,
    family: Annotated[
        str | None,
        typer.Option(help="Family (default: the run's); another trains a new encoder on the fixed model."),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(help="IWAE samples for log p(x) where it is not exact (with --ais-steps: AIS chains)."),
    ] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    points: Annotated[int, typer.Option(help="Number of points to decompose on.")] = 1000,
    first: Annotated[int, typer.Option(help="Index of the first of them (0-based), to decompose in pieces.")] = 0,
    steps: Annotated[int, typer.Option(help="Per-datapoint optimisation steps for q*.")] = 1000,
    ais_steps: Annotated[
        int, typer.Option(help="Estimate log p(x) by annealed importance sampling with this many steps (0: IWAE).")
    ] = 0,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="inference.KEY=VALUE",
            help="With --family: an inference setting of the new encoder (--set inference.flow_centred=true). "
            "Repeatable.",
        ),
    ] = None,
    threads: ThreadsFlag = None,
    as_json: JsonFlag = False,
) -> None:
    """Split the inference gap into approximation and amortization gaps (Cremer et al. 2018)."""
    from avi.evaluation.gaps import CHECK_POINTS
    from avi.runs.gaps import run_gaps

    _set_threads(threads)
    try:
        encoder_settings = _inference_settings(settings or [])
        with reporter(console, "points", transient=True) as progress:
            progress.start("gap decomposition")
            result = run_gaps(
                run_dir, data=data, family=family, k=k, split=split, points=points, first=first,
                steps=steps, ais_steps=ais_steps, encoder_settings=encoder_settings,
                on_progress=_pieces(progress, {"refining q*": "steps"}),
            )  # fmt: skip
    except AviError as err:
        _fail(str(err))
    if not result["q_star_converged"]:
        why = _unconverged(steps, result["refine_gain"], min(CHECK_POINTS, result["n"]))
        console.print(f"warning: {escape(why)}", highlight=False, soft_wrap=True)
    if as_json:
        _print_json(result)
        return
    table = Table(title=f"{run_dir}: {result['family']} on {result['data']} ({result['n']} points)")
    table.add_column("term")
    table.add_column("nats per point", justify="right")
    table.add_row(f"log p(x) ({result['log_likelihood_method']})", f"{result['log_likelihood']:.3f}")
    table.add_row(escape("L[q*] (optimal in family)"), f"{result['elbo_optimal']:.3f}")
    table.add_row(escape("L[q] (amortized)"), f"{result['elbo_amortized']:.3f}")
    table.add_row("approximation gap", f"{result['approximation_gap']:.3f} ± {result['approximation_gap_stderr']:.3f}")
    table.add_row("amortization gap", f"{result['amortization_gap']:.3f} ± {result['amortization_gap_stderr']:.3f}")
    Console().print(table)
    console.print(f"figure: {Path(run_dir) / 'gaps.png'}", highlight=False, soft_wrap=True)


def _inference_settings(items: list[str]) -> dict[str, Any]:
    """``avi gaps --set`` items as the new encoder's inference settings; any other section is a
    :class:`ConfigError` (the trained model and its data are fixed)."""
    parsed = parse_set(items)
    others = sorted(set(parsed) - {"inference"})
    if others:
        raise ConfigError(f"avi gaps --set takes inference.KEY=VALUE (the new encoder's settings), not {others[0]}.*")
    return parsed.get("inference", {})


def _unconverged(steps: int, gain: float, points: int) -> str:
    """Why q* may be short of the family's optimum, given the gain of its last steps on the
    first ``points`` points."""
    if steps == 0:
        return "--steps 0: q* is the encoder's q, and the approximation gap is the whole gap"
    return (
        f"q* may not have converged: {steps} steps rather than {steps // 2} raised L[q*] by {gain:.3f} "
        f"nats per point (on the first {points} points); raise --steps"
    )


def _pieces(progress: Reporter, units: dict[str, str]) -> Callable[[str, int, int], None]:
    """Reports (what, done, total) of work in pieces as ``progress``: a new piece starts when
    ``what`` changes, counted in ``units[what]`` (else the reporter's unit)."""
    current = [""]

    def tell(what: str, done: int, total: int) -> None:
        if what != current[0]:
            current[0] = what
            progress.start(what, total, units.get(what))
        progress.update(done, total)

    return tell


@app.command()
@_interruptible("no file was left half-written")
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by avi fit.")],
) -> None:
    """Write PNG figures and a self-contained HTML page into the run directory; print the page's path."""
    from avi.runs.report import run_report

    try:
        with console.status("drawing figures"):
            path = run_report(run_dir)
    except AviError as err:
        _fail(str(err))
    print(path)


def main() -> None:
    """Entry point of the ``avi`` script: a usage error (an unknown flag, ``--lr abc``) is one line
    with exit code 2, like every other bad input; Ctrl-C exits at once (:func:`_exit_now`)."""
    code: Any = None
    try:
        code = typer.main.get_command(app).main(prog_name="avi", standalone_mode=False)
    except typer.TyperException as err:
        _print_error(err.format_message())
        code = err.exit_code
    except typer.Abort:
        console.print("aborted", highlight=False)
        code = 1
    except KeyboardInterrupt:  # while the command line was being built, before any command ran
        code = INTERRUPTED
    finally:
        # under torchrun: leave the process group (a barrier first), here at the edge; not after
        # Ctrl-C, where every rank is stopping and the barrier could wait for one gone. A command
        # that never imported the module (nor torch) has no process group.
        distributed = sys.modules.get("avi.runs.distributed")
        if distributed is not None and code != INTERRUPTED:
            distributed.shutdown()
    if code == INTERRUPTED:
        if not _interrupt_lines:  # before a command ran
            _interrupted("nothing was done")
        _exit_now(code)
    sys.exit(code or 0)


def _exit_now(code: int) -> NoReturn:
    """Exit with ``code`` after the atexit handlers and a flush of the output, skipping the
    interpreter's teardown of its modules: torch's alone takes up to 2 s on a busy machine,
    too long for Ctrl-C. Nothing is lost: every file avi writes is complete when written."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
