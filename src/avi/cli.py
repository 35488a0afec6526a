"""The ``avi`` command: a thin layer over :mod:`avi.runs`.

Every input error is printed as one line on standard error with exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from torch import Tensor

from avi.errors import AviError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Amortized variational inference: fit and evaluate latent-variable models.",
)
console = Console(stderr=True)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def fit(
    config: Annotated[Path | None, typer.Argument(help="TOML config file; flags override it.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model: vae, ppca, factor-analysis; discrete latents: discrete-vae (categorical) or sbn (sigmoid belief net)."
        ),
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Architecture preset: kingma-welling or burda-1l.")] = None,
    data: Annotated[str | None, typer.Option(help="mnist, synthetic, or a .npy/.npz/.csv file.")] = None,
    latent_dim: Annotated[
        int | None, typer.Option(help="Latent dimension K (discrete-vae: categorical variables; sbn: binary units).")
    ] = None,
    num_classes: Annotated[
        int | None, typer.Option(help="Classes of each categorical latent of the discrete-vae (default 10).")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="amortized, per-datapoint, semi-amortized or iterative.")
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(help="mean-field, full-rank, iaf or nsf (discrete models: their own, categorical or bernoulli)."),
    ] = None,
    refine_steps: Annotated[
        int | None, typer.Option(help="Refinement steps K of the semi-amortized strategy.")
    ] = None,
    denoise: Annotated[
        float | None, typer.Option(help="Denoising encoder: input noise of std SIGMA in training (Shu et al. 2018).")
    ] = None,
    weight_norm: Annotated[
        bool, typer.Option("--weight-norm", help="Weight-normalise the encoder's linear layers (Shu et al. 2018).")
    ] = False,
    consistency: Annotated[
        float | None,
        typer.Option(help="Consistency penalty WEIGHT on KL(q(z|x) || q(z|t(x))) (Sinha and Dieng 2021)."),
    ] = None,
    transform: Annotated[
        str | None, typer.Option(help="Transform t of the consistency penalty: translate or rotate.")
    ] = None,
    objective: Annotated[str | None, typer.Option(help="elbo, iwae, renyi, cubo or rws.")] = None,
    k: Annotated[
        int | None, typer.Option(help="Samples per point of the iwae, renyi, cubo and rws objectives.")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Order alpha of the renyi objective (1: ELBO, 0: IWAE).")
    ] = None,
    cubo_order: Annotated[float | None, typer.Option(help="Order n > 1 of the cubo objective (default 2).")] = None,
    estimator: Annotated[
        str | None,
        typer.Option(
            help="Gradient estimator: reparam (default); score, score-baseline, nvil, stl or gumbel for elbo; vimco or dreg for iwae. Discrete models: score, score-baseline, nvil, gumbel (default) or vimco; or --objective rws."
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Temperature > 0 of the gumbel estimator's relaxation (default 1).")
    ] = None,
    straight_through: Annotated[
        bool, typer.Option("--straight-through", help="gumbel estimator: hard samples forward, relaxed gradient.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training data.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    subset: Annotated[int | None, typer.Option(help="Train on the first N training points only.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp32, or bf16: the networks' products in bfloat16 (autocast), the bound in fp32."),
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="Train through torch.compile (amortized strategy): the eager bound and gradients for the same noise, faster with several samples per point at small batches. Also with --resume.",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to create.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    decoder: Annotated[str | None, typer.Option(help="VAE decoder: mlp or made (autoregressive).")] = None,
    kl_warmup: Annotated[
        int | None, typer.Option(help="Collapse remedy: linear KL warm-up over the first EPOCHS epochs.")
    ] = None,
    kl_cycles: Annotated[
        int | None, typer.Option(help="Collapse remedy: N cycles of cyclical KL annealing over the run.")
    ] = None,
    free_bits: Annotated[
        float | None, typer.Option(help="Collapse remedy: free bits, NATS per latent dimension.")
    ] = None,
    beta: Annotated[float | None, typer.Option(help="Collapse remedy: weight B of the KL term (beta-VAE).")] = None,
    aggressive: Annotated[
        bool, typer.Option("--aggressive", help="Collapse remedy: aggressive encoder training (He et al. 2019).")
    ] = False,
) -> None:
    """Train a model and its posterior; write config, metrics, checkpoint and summary to a run directory."""
    from avi.runs.config import load_config
    from avi.runs.distributed import is_main
    from avi.runs.train import run_fit

    try:
        if resume is not None:
            given = {"config": config, "model": model, "preset": preset, "data": data, "latent_dim": latent_dim,
                     "strategy": strategy, "family": family, "refine_steps": refine_steps, "objective": objective, "k": k, "batch_size": batch_size,
                     "lr": lr, "seed": seed, "subset": subset, "device": device, "precision": precision, "out": out}  # fmt: skip
            given.update({"denoise": denoise, "weight_norm": weight_norm or None, "alpha": alpha, "cubo_order": cubo_order, "estimator": estimator,
                          "consistency": consistency, "transform": transform, "num_classes": num_classes,
                          "temperature": temperature, "straight_through": straight_through or None})  # fmt: skip
            given.update({"decoder": decoder, "kl_warmup": kl_warmup, "kl_cycles": kl_cycles, "free_bits": free_bits,
                          "beta": beta, "aggressive": aggressive or None})  # fmt: skip
            changed = [
                name if name == "config" else "--" + name.replace("_", "-")
                for name, value in given.items()
                if value is not None
            ]
            if changed:
                _fail(
                    f"--resume continues a run as configured; it cannot change {', '.join(changed)} (only --epochs and --compile)"
                )
            settings = None
        else:
            settings = load_config(
                config,
                {
                    "model": {
                        "name": model,
                        "preset": preset,
                        "latent_dim": latent_dim,
                        "decoder": decoder,
                        "num_classes": num_classes,
                    },
                    "data": {"source": data, "subset": subset},
                    "inference": {
                        "strategy": strategy,
                        "family": family,
                        "refine_steps": refine_steps,
                        "denoise": denoise,
                        "weight_norm": weight_norm or None,
                        "consistency": consistency,
                        "transform": transform,
                    },
                    "objective": {
                        "name": objective,
                        "k": k,
                        "alpha": alpha,
                        "cubo_order": cubo_order,
                        "estimator": estimator,
                        "temperature": temperature,
                        "straight_through": straight_through or None,
                    },
                    "train": {
                        "epochs": epochs,
                        "batch_size": batch_size,
                        "lr": lr,
                        "seed": seed,
                        "device": device,
                        "precision": precision,
                        "compile": compile or None,
                    },
                    "remedies": {
                        "kl_warmup": kl_warmup,
                        "kl_cycles": kl_cycles,
                        "free_bits": free_bits,
                        "beta": beta,
                        "aggressive": aggressive or None,
                    },
                },
            )
        with _TrainingProgress() as progress:
            run_dir = run_fit(
                settings,
                resume if resume is not None else out,
                resume=resume is not None,
                epochs=epochs if resume is not None else None,  # a fresh run takes --epochs from its config
                compile=compile,  # with --resume: compiled or not, whatever the run's config says
                progress=progress.update,
                on_epoch=progress.epoch_done,
            )
    except AviError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        console.print("interrupted: the last finished epoch is saved; continue with [bold]avi fit --resume RUN_DIR[/]")
        raise typer.Exit(130) from None
    if not is_main():  # under torchrun, rank 0 alone speaks
        return
    console.print(f"run directory: [bold]{run_dir}[/]  (next: avi evaluate {run_dir})", highlight=False)
    print(run_dir)


class _TrainingProgress:
    """A rich progress bar per epoch: step, running objective, examples per second."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("objective {task.fields[objective]:>9}"),
            TextColumn("{task.fields[rate]:>8} ex/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task: Any = None
        self.epoch = 0
        self.last = 0.0
        self.started = 0.0

    def __enter__(self) -> _TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, epoch: int, done: int, total: int, sums: Tensor) -> None:
        now = time.perf_counter()
        if epoch != self.epoch:
            self.epoch, self.started = epoch, now
            self.task = self.progress.add_task("", total=total, epoch=epoch, objective="", rate="")
        elif now - self.last < 0.2 and done < total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        # one host read per refresh, not per step
        self.progress.update(self.task, completed=done, objective=f"{sums[0].item() / done:.2f}", rate=f"{rate:,.0f}")

    def epoch_done(self, row: dict[str, Any]) -> None:
        self.progress.console.print(
            f"epoch {row['epoch']:>3}  train ELBO {row['train_elbo']:9.2f}  KL {row['train_kl']:7.2f}  "
            f"val ELBO {row['val_elbo']:9.2f}  {row['epoch_seconds']:6.1f} s"
            + (f"  AU {row['active_units']}  MI {row['mutual_information']:.2f}" if "active_units" in row else ""),
            highlight=False,
        )


@app.command()
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on standard output.")] = False,
) -> None:
    """Test ELBO and importance-sampled log-likelihood (IWAE bound with k samples) of a run.

    Under torchrun each process evaluates a shard of the points; rank 0 prints and writes."""
    from avi.runs.distributed import is_main
    from avi.runs.evaluate import run_evaluate

    try:
        with Progress(
            TextColumn("importance sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("points"), TimeElapsedColumn(),
            TimeRemainingColumn(), console=console, transient=True, disable=os.environ.get("RANK", "0") != "0",
        ) as progress:  # fmt: skip
            task = progress.add_task("", total=None)
            result = run_evaluate(run_dir, data=data, k=k, cubo=cubo, consistency=consistency, device=device, precision=precision,
                                  memory_budget=memory_budget,
                                  on_batch=lambda done, total: progress.update(task, completed=done, total=total))  # fmt: skip
    except AviError as err:
        _fail(str(err))
    if not is_main():  # under torchrun, rank 0 alone speaks
        return
    if precision != result["precision"]:
        console.print(
            f"{precision} evaluation needs native bf16 and a Bernoulli MLP decoder: ran {result['precision']}",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        print(json.dumps(result))
        return
    title = f"{run_dir} on {result['data']} ({result['n']} points)"
    table = Table(title=title, caption="± Monte Carlo standard error", show_header=True)
    table.add_column("metric")
    table.add_column("nats per point", justify="right")
    table.add_row("ELBO", f"{result['elbo']:.2f}")
    table.add_row("  reconstruction", f"{result['reconstruction']:.2f}")
    table.add_row("  KL", f"{result['kl']:.2f}")
    table.add_row(
        f"log p(x), IWAE k={result['k']}", f"{result['log_likelihood']:.2f} ± {result['log_likelihood_stderr']:.2g}"
    )
    if "cubo" in result:
        table.add_row(
            f"CUBO_{result['cubo_order']:g} k={result['k']} (upper bound)",
            f"{result['cubo']:.2f} ± {result['cubo_stderr']:.2g}",
        )
    for name in ("translate", "rotate"):
        if f"consistency_kl_{name}" in result:
            table.add_row(f"consistency KL ({name})", f"{result[f'consistency_kl_{name}']:.3f}")
    if result.get("probe_accuracy") is not None:
        table.add_row("linear-probe accuracy", f"{100 * result['probe_accuracy']:.1f}%")
    table.add_row("I(x; z) (He et al. 2019)", f"{result['mutual_information']:.2f}")
    table.add_row("active units", f"{result['active_units']} of {len(result['kl_per_dim'])}")
    table.add_row("KL per dimension", " ".join(f"{v:.2f}" for v in result["kl_per_dim"]))
    Console().print(table)


@app.command()
def compare(
    runs: Annotated[list[Path] | None, typer.Argument(help="Run directories to compare side by side.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Compare inference methods on a model instead: linear-regression, logistic-regression, normal-normal, beta-bernoulli or dirichlet-categorical."
        ),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="With --model, comma-separated: exact, mean-field-vi, full-rank-vi, mh, gibbs, nuts (default: all that apply)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory for the JSON/Markdown table and the PNG figure.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on standard output.")] = False,
) -> None:
    """Compare runs (avi compare RUN_DIR RUN_DIR ...: key metrics, best marked, Markdown and a figure),
    or inference methods on one model (avi compare --model NAME: time against posterior accuracy)."""
    if runs and model:
        _fail("give run directories or --model, not both")
    if not runs and not model:
        _fail("give run directories to compare runs, or --model NAME to compare inference methods")
    if runs and methods:
        _fail("--methods picks the inference methods of --model; run directories are compared as they are")
    if runs:
        _compare_runs(runs, out or Path("runs") / "compare", as_json)
        return
    from avi.baselines.compare import format_table, run_compare

    try:
        comparison, out_dir = run_compare(model, methods, out)
    except AviError as err:
        _fail(str(err))
    if as_json:
        print(json.dumps(comparison.to_dict()))
        return
    print(format_table(comparison))
    console.print(f"figure and JSON: [bold]{out_dir}[/]", highlight=False)


def _compare_runs(runs: list[Path], out: Path, as_json: bool) -> None:
    from avi.runs.compare import METRICS_COMPARED, best_of, collect, write_comparison

    try:
        collected = [collect(run) for run in runs]
    except AviError as err:
        _fail(str(err))
    markdown, figure = write_comparison(collected, out)
    best = {key: collected[i]["run"] for key, _, d in METRICS_COMPARED if (i := best_of(collected, key, d)) is not None}
    if as_json:
        print(json.dumps({"runs": collected, "best": best}))
        return
    table = Table(title="runs compared (* marks the best value of each row)")
    table.add_column("metric")
    for r in collected:
        table.add_column(escape(f"{Path(r['run']).name}\n{r['strategy']}, {r['family']}"), justify="right")
    for key, label, direction in METRICS_COMPARED:
        if all(r.get(key) is None for r in collected):
            continue
        winner = best_of(collected, key, direction)
        cells = []
        for i, r in enumerate(collected):
            value = r.get(key)
            text = "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)
            cells.append(f"[bold green]{text} *[/]" if i == winner else text)
        table.add_row(label, *cells)
    Console().print(table)
    console.print(f"Markdown: {markdown}  figure: {figure}", highlight=False)


@app.command()
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
    steps: Annotated[int, typer.Option(help="Per-datapoint optimisation steps for q*.")] = 1000,
    ais_steps: Annotated[
        int, typer.Option(help="Estimate log p(x) by annealed importance sampling with this many steps (0: IWAE).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on standard output.")] = False,
) -> None:
    """Split the inference gap into approximation and amortization gaps (Cremer et al. 2018)."""
    from avi.runs.gaps import run_gaps

    try:
        with console.status("optimising per-datapoint posteriors and estimating log p(x)"):
            result = run_gaps(
                run_dir, data=data, family=family, k=k, split=split, points=points, steps=steps, ais_steps=ais_steps
            )
    except AviError as err:
        _fail(str(err))
    if as_json:
        print(json.dumps(result))
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
    console.print(f"figure: {Path(run_dir) / 'gaps.png'}", highlight=False)


@app.command()
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
    """Entry point of the ``avi`` script."""
    app()


if __name__ == "__main__":
    sys.exit(main())
