"""The options of ``avi fit``, each declared once: a table of flags and the config keys they set.

The command's parameters (:func:`parameters`), the config overrides (:func:`overrides`) and the
``--resume`` check (:func:`changed_on_resume`) are all read from :data:`FIT_FLAGS`. ``--set
section.key=value`` (:func:`parse_set`) reaches any key the table does not name.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, cast

import typer

from avi.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomllib parser as its backport, tomli
    import tomli as tomllib

__all__ = ["FIT_FLAGS", "Flag", "changed_on_resume", "overrides", "parameters", "parse_set", "widths"]


@dataclass(frozen=True)
class Flag:
    """One option of ``avi fit``: the config key ``section.field`` it sets, its value's type, its
    help. The flag is ``--field`` with dashes unless ``name`` says otherwise; a boolean flag only
    switches its setting on, unless ``negatable`` adds ``--no-NAME``; ``resumable`` flags may be
    given with ``--resume``. A flag with ``parse`` takes text, which ``parse(text, option)`` turns
    into the value (a list of widths from ``256,128``)."""

    key: str
    type: type
    help: str
    name: str = ""
    negatable: bool = False
    resumable: bool = False
    #: how the flag's text becomes the setting's value, where the value is not one token of ``type``
    parse: Callable[[str, str], Any] | None = None

    @property
    def option(self) -> str:
        """The flag as typed: ``--latent-dim``."""
        return self.name or "--" + self.key.split(".")[1].replace("_", "-")

    @property
    def param(self) -> str:
        """The command function's parameter: ``latent_dim``."""
        return self.option.removeprefix("--").replace("-", "_")


def widths(text: str, option: str) -> list[int]:
    """Layer widths from comma-separated integers, ``256,128`` -> [256, 128] (an empty text: no
    layer); the config checks that they are positive. :class:`ConfigError` naming ``option`` else."""
    try:
        return [int(width) for width in text.split(",")] if text.strip() else []
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated layer widths such as 256,128, not {text!r}") from None


FIT_FLAGS: tuple[Flag, ...] = (
    Flag(
        "model.name",
        str,
        "Model: vae, hvae (several stochastic layers), ppca, factor-analysis; discrete latents: discrete-vae "
        "(categorical) or sbn (sigmoid belief net); "
        "or your own class by import path, path/to/file.py:Class or package.module:Class "
        "(its arguments by --set in the table model.args).",
        name="--model",
    ),
    Flag(
        "model.preset",
        str,
        "Architecture preset: kingma-welling, burda-1l, burda-2l (an hvae), or mnist-conv (a conv vae).",
    ),
    Flag("data.source", str, "mnist, synthetic, or a .npy/.npz/.csv file.", name="--data"),
    Flag(
        "data.standardize", bool, "Standardise each dimension by the training split's mean and sd (not binarised data)."
    ),
    Flag("model.latent_dim", int, "Latent dimension K (discrete-vae: categorical variables; sbn: binary units)."),
    Flag(
        "model.likelihood",
        str,
        "VAE likelihood: bernoulli (binary data, or data in [0, 1] binarised) or gaussian (real-valued data).",
    ),
    Flag(
        "model.hidden",
        list,
        "Decoder widths, comma-separated: 256,128 (default one layer of min(400, max(32, 4 x data dimension))).",
        parse=widths,
    ),
    Flag("model.num_classes", int, "Classes of each categorical latent of the discrete-vae (default 10)."),
    Flag(
        "model.layers",
        list,
        "hvae: sizes of the stochastic layers z_1 (next to x), z_2, ..., comma-separated: 100,50 (the default); "
        "the latent dimension is their sum.",
        parse=widths,
    ),
    Flag(
        "model.layer_hidden",
        list,
        "hvae: widths between consecutive stochastic layers, comma-separated (default --hidden's).",
        parse=widths,
    ),
    Flag("inference.strategy", str, "amortized, per-datapoint, semi-amortized or iterative."),
    Flag(
        "inference.family",
        str,
        "mean-field, full-rank, iaf, nsf, planar, radial or sylvester "
        "(discrete models: their own, categorical or bernoulli; hvae: hierarchical, its default).",
    ),
    Flag(
        "inference.encoder_hidden",
        list,
        "Encoder widths, comma-separated (default the decoder's, mirrored).",
        parse=widths,
    ),
    Flag(
        "inference.encoder",
        str,
        "Your own encoder by import path, path/to/file.py:factory or package.module:factory, called as "
        "factory(data_dim, param_size, **args) (args by --set in the table inference.encoder_args).",
    ),
    Flag("inference.refine_steps", int, "Refinement steps K of the semi-amortized strategy."),
    Flag("inference.denoise", float, "Denoising encoder: input noise of std SIGMA in training (Shu et al. 2018)."),
    Flag("inference.weight_norm", bool, "Weight-normalise the encoder's linear layers (Shu et al. 2018)."),
    Flag(
        "inference.consistency", float, "Consistency penalty WEIGHT on KL(q(z|x) || q(z|t(x))) (Sinha and Dieng 2021)."
    ),
    Flag("inference.transform", str, "Transform t of the consistency penalty: translate or rotate."),
    Flag("objective.name", str, "elbo, iwae, renyi, cubo or rws.", name="--objective"),
    Flag("objective.k", int, "Samples per point of the iwae, renyi, cubo and rws objectives."),
    Flag("objective.alpha", float, "Order alpha of the renyi objective (1: ELBO, 0: IWAE)."),
    Flag("objective.cubo_order", float, "Order n > 1 of the cubo objective (default 2)."),
    Flag(
        "objective.estimator",
        str,
        "Gradient estimator: reparam (default); score, score-baseline, nvil, stl or gumbel for elbo; vimco or dreg "
        "for iwae. Discrete models: score, score-baseline, nvil, gumbel (default) or vimco; or --objective rws.",
    ),
    Flag("objective.temperature", float, "Temperature > 0 of the gumbel estimator's relaxation (default 1)."),
    Flag("objective.straight_through", bool, "gumbel estimator: hard samples forward, relaxed gradient."),
    Flag(
        "train.epochs", int, "Passes over the training data (with --resume: in all, extending the run).", resumable=True
    ),
    Flag("train.batch_size", int, "Minibatch size."),
    Flag(
        "train.lr",
        float,
        "Adam learning rate (with --resume: the new rate from here on, kept in the run's config.json).",
        resumable=True,
    ),
    Flag(
        "train.lr_schedule",
        str,
        "Learning-rate schedule: constant; burda (Burda et al.'s 3^i-epoch stages); cosine (to 0 over the "
        "epochs); plateau (halve when the training objective stalls, stop at the train.lr_reductions-th). With "
        "--resume: the schedule from the next epoch on, kept in the run's config.json.",
        resumable=True,
    ),
    Flag("train.seed", int, "Random seed, 0 to 2^63 - 1."),
    Flag(
        "train.early_stop",
        int,
        "Stop after PATIENCE epochs without a better validation ELBO, keeping the best epoch as best.pt "
        "(avi evaluate --checkpoint best scores it); needs a validation split.",
    ),
    Flag(
        "train.diagnostics_every",
        int,
        "Record the collapse diagnostics (KL per dimension, active units, mutual information) every N epochs "
        "and at the last that training foresees (0: at the last only; default 1). With --resume: from the "
        "next epoch on, kept in config.json.",
        resumable=True,
    ),
    Flag(
        "train.ema_decay",
        float,
        "Keep an exponential moving average of the weights at decay D in (0, 1), e.g. 0.999 (with a warm-up): "
        "validation, best.pt, avi evaluate, gaps and report use the averaged weights.",
    ),
    Flag("data.subset", int, "Train on the first N training points only."),
    Flag("train.device", str, "cpu, cuda, cuda:N (the GPU of index N) or auto."),
    Flag("train.precision", str, "fp32, or bf16: the networks' products in bfloat16 (autocast), the bound in fp32."),
    Flag(
        "train.compile",
        bool,
        "Train through torch.compile (amortized strategy): the eager bound and gradients for the same noise, faster "
        "with several samples per point at small batches. Also with --resume.",
        negatable=True,
        resumable=True,
    ),
    Flag(
        "train.threads",
        int,
        "Intra-op threads of this process, 1 to 4096 (default: the cores that other processes leave free; "
        "with --resume: for this call).",
        resumable=True,
    ),
    Flag("model.decoder", str, "VAE decoder: mlp or made (autoregressive)."),
    Flag(
        "model.network",
        str,
        "VAE networks: mlp, or conv for 28x28 images (convolutional encoder, transposed-convolution decoder; "
        "--hidden their linear layers' widths).",
    ),
    Flag(
        "model.prior",
        str,
        "VAE prior p(z): normal (default); vamp, the mixture of the encoder's posteriors at learned pseudo-inputs "
        "(Tomczak and Welling 2018); or mog, a learned mixture of Gaussians.",
    ),
    Flag("model.prior_components", int, "Components of a learned prior (default 500 for vamp, 10 for mog)."),
    Flag("remedies.kl_warmup", int, "Collapse remedy: linear KL warm-up over the first EPOCHS epochs."),
    Flag("remedies.kl_cycles", int, "Collapse remedy: N cycles of cyclical KL annealing over the run."),
    Flag("remedies.free_bits", float, "Collapse remedy: free bits, NATS per latent dimension."),
    Flag("remedies.beta", float, "Collapse remedy: weight B of the KL term (beta-VAE)."),
    Flag("remedies.aggressive", bool, "Collapse remedy: aggressive encoder training (He et al. 2019)."),
    Flag(
        "remedies.temper",
        int,
        "Annealed free energy (Rezende and Mohamed 2015): the inverse temperature on log p(x, z) rises "
        "linearly from remedies.temper_start (0.01) to 1 over the first EPOCHS epochs.",
    ),
)


def parameters(flags: Iterable[Flag]) -> list[inspect.Parameter]:
    """The command function's keyword parameters, one per flag, each ``None`` when not given."""
    return [
        inspect.Parameter(
            flag.param,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                (str if flag.parse else flag.type) | None,
                typer.Option(
                    f"{flag.option}/--no-{flag.option[2:]}" if flag.negatable else flag.option, help=flag.help
                ),
            ],
        )
        for flag in flags
    ]


def _given(value: Any) -> bool:
    """A flag left out is ``None``; a boolean flag set off (``--no-compile``) leaves the config's setting."""
    return value is not None and value is not False


def overrides(flags: Iterable[Flag], values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Config overrides ``{section: {field: value}}`` of the flags given in ``values`` (by parameter name)."""
    result: dict[str, dict[str, Any]] = {}
    for flag in flags:
        value = values[flag.param]
        if _given(value):
            section, field = flag.key.split(".")
            result.setdefault(section, {})[field] = value if flag.parse is None else flag.parse(value, flag.option)
    return result


def changed_on_resume(flags: Iterable[Flag], values: Mapping[str, Any]) -> list[str]:
    """The flags given in ``values`` that ``--resume`` cannot take: all but the resumable ones.
    The value of each resumable one given is checked against its config field (no config is
    resolved on resume): :class:`ConfigError` for ``--threads 0``."""
    changed = []
    for flag in flags:
        if not _given(values[flag.param]):
            continue
        if flag.resumable:
            _check_value(flag, values[flag.param])
        else:
            changed.append(flag.option)
    return changed


def _check_value(flag: Flag, value: Any) -> None:
    """``value`` validated alone against the config field ``flag.key``, as a config would."""
    from pydantic import BaseModel, ValidationError

    from avi.runs.config import Config

    section, field = flag.key.split(".")
    model = cast(type[BaseModel], Config.model_fields[section].annotation)
    try:
        model.__pydantic_validator__.validate_assignment(model.model_construct(), field, value)
    except ValidationError as err:
        message = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid value for {flag.option}: {message}, got {value!r}") from None


def parse_set(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``--set section.key=value`` items as nested overrides: ``model.args.hidden=64`` gives
    ``{"model": {"args": {"hidden": 64}}}``. A value is read as a TOML value (``64``, ``[64, 64]``,
    ``true``, ``"text"``), else taken as the plain string; a later item wins over an earlier one."""
    result: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        path = key.strip().split(".")
        if not equals or len(path) < 2 or not all(path):
            raise ConfigError(f"--set takes section.key=value (e.g. --set model.latent_dim=8), not {item!r}")
        table = result
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {item!r}: {part!r} was set to a value, not a table")
        table[path[-1]] = _toml_value(text.strip())
    return result


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
