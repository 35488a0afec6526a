"""From a config to objects: data splits, the model, the posterior, the objective."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avi.data.dataset import Dataset, Splits
from avi.data.files import load_array_file
from avi.data.mnist import load_mnist, static_mnist
from avi.data.standardize import moments, standardize
from avi.data.transforms import check_images, make_transform
from avi.encoders.amortized import AmortizedPosterior, DenoisingEncoder, mlp_encoder, weight_normalize
from avi.encoders.conv import conv_encoder
from avi.errors import ConfigError, DataError, first_line
from avi.families import Family, make_family
from avi.families.discrete import BernoulliFamily, CategoricalFamily
from avi.families.flow import FLOW_KINDS, FlowFamily
from avi.families.gaussian import inverse_softplus
from avi.families.hierarchical import HierarchicalFamily
from avi.families.planar import PlanarFamily
from avi.families.posterior import Posterior
from avi.families.radial import RadialFamily
from avi.families.sylvester import SylvesterFamily
from avi.inference.local import LocalPosterior
from avi.inference.semi_amortized import IterativePosterior, SemiAmortizedPosterior
from avi.models import CategoricalVAE, HierarchicalVAE, LatentVariableModel, LinearGaussian, SigmoidBeliefNet, VAEModel
from avi.models.base import as_model
from avi.models.made import MADEModel
from avi.models.priors import MoGPrior, VampPrior, pseudo_input_start
from avi.nn import mlp
from avi.objectives.consistency import Consistency
from avi.objectives.select import Objective
from avi.objectives.tempered import Tempered
from avi.objectives.weighted import WeightedKL
from avi.runs.config import PRIOR_COMPONENTS, Config, epoch_inverse_temperature, epoch_kl_weight, weights_kl
from avi.runs.imports import import_object
from avi.runs.memory import MODEL_SIZES, settings_of, sized_by

__all__ = [
    "build_family",
    "build_model",
    "build_objective",
    "build_posterior",
    "build_prior",
    "default_hidden",
    "gaussian_start",
    "linear_gaussian_start",
    "load_splits",
    "prepare_data",
]


def default_hidden(data_dim: int) -> list[int]:
    """The decoder's widths where ``model.hidden`` is unset: one layer of min(400, max(32, 4 D))
    units for data of dimension D (the encoder mirrors them).

    400 is Kingma and Welling's (2014) layer for MNIST (D = 784), kept for every D >= 100, so the
    main job and the presets are unchanged. Below that the layer has 4 units per input
    dimension: on scikit-learn's 8x8 digits (D = 64, Gaussian likelihood) 256 units reach the
    validation ELBO of 400 after 100 epochs (46.5 against 46.0 nats; 128 units: 43.6) with a
    third fewer weights. At least 32 units, so that a tiny D still gets a nonlinear decoder.
    """
    return [min(400, max(32, 4 * data_dim))]


def build_model(config: Config, data_dim: int, train: Tensor | None = None) -> LatentVariableModel:
    """The model named in ``config.model`` over data of dimension ``data_dim``; unset widths
    ``model.hidden`` are :func:`default_hidden`'s, recorded in ``config`` (and so in the run's
    config.json). Given the training data ``train`` (N, D), a Gaussian likelihood starts at
    their moments (:func:`gaussian_start`), PPCA and factor analysis too
    (:func:`linear_gaussian_start`), and a VampPrior's pseudo-inputs at training points
    (:func:`build_prior`)."""
    m = config.model
    if m.custom:
        return _user_model(config, data_dim)
    if m.name in ("ppca", "factor-analysis"):
        linear = LinearGaussian(data_dim, m.latent_dim, "isotropic" if m.name == "ppca" else "diagonal")
        return linear if train is None else linear_gaussian_start(linear, train)
    if m.hidden is None:
        m.hidden = default_hidden(data_dim)
    if m.name == "hvae":
        return _hierarchical_model(config, data_dim, train)
    if m.name == "vae" and m.decoder == "made":
        return MADEModel(data_dim, m.latent_dim, m.hidden, m.activation)
    if m.name == "vae":
        start = gaussian_start(train) if train is not None and m.likelihood == "gaussian" else {}
        prior = build_prior(config, data_dim, train)
        return VAEModel(
            data_dim, m.latent_dim, m.hidden, m.activation, m.likelihood, network=m.network, **start,
            learned_prior=prior,
        )  # fmt: skip
    if m.name == "discrete-vae":
        return CategoricalVAE(data_dim, m.latent_dim, m.num_classes, m.hidden, m.activation)
    return SigmoidBeliefNet(data_dim, m.latent_dim, m.hidden, m.activation)


def _hierarchical_model(config: Config, data_dim: int, train: Tensor | None) -> HierarchicalVAE:
    """The hvae of ``config.model``; unset ``layer_hidden`` are ``hidden``'s, recorded in
    ``config``; a Gaussian likelihood starts at the training data's moments (:func:`gaussian_start`)."""
    m = config.model
    if m.layers is None or m.hidden is None:
        raise ConfigError("the hvae needs model.layers and model.hidden (Config and build_model set them)")
    if m.layer_hidden is None:
        m.layer_hidden = list(m.hidden)
    start = gaussian_start(train) if train is not None and m.likelihood == "gaussian" else {}
    return HierarchicalVAE(data_dim, m.layers, m.hidden, m.layer_hidden, m.activation, m.likelihood, **start)


def build_prior(config: Config, data_dim: int, train: Tensor | None = None) -> MoGPrior | VampPrior | None:
    """The VAE's learned prior of ``model.prior`` (None for N(0, I)), of ``model.prior_components``
    components; a VampPrior's pseudo-inputs start at points of ``train`` where given
    (:func:`~avi.models.priors.pseudo_input_start`), and :func:`build_posterior` attaches the
    run's posterior to it."""
    m = config.model
    if m.prior == "normal":
        return None
    components = m.prior_components or PRIOR_COMPONENTS[m.prior]
    if m.prior == "mog":
        return MoGPrior(m.latent_dim, components)
    return VampPrior(pseudo_input_start(components, data_dim, train))


def linear_gaussian_start(model: LinearGaussian, x: Tensor) -> LinearGaussian:
    """Start PPCA or factor analysis at the training data x (N, D), in place: mu at their mean,
    and W's rows and Psi scaled so that each dimension's model variance ||W_d||^2 + Psi_d is
    about its sample variance v_d, half from each (in expectation over W's random start, whose
    rows have squared norm about 1): W_d <- W_d sqrt(v_d / 2), Psi_d = v_d / 2 (PPCA: their mean
    over the dimensions that vary). A constant dimension (MNIST's border pixels) keeps W's and
    Psi's default start there."""
    var, mean = torch.var_mean(x.double(), dim=0, correction=0)
    varies = var > 0
    half = torch.where(varies, var / 2, 1.0)
    with torch.no_grad():
        model.mu.copy_(mean)
        model.W.mul_(half.sqrt()[:, None].to(model.W.dtype))
        if not bool(varies.any()):
            return model
        noise = inverse_softplus(half if model.noise == "diagonal" else half[varies].mean().reshape(1))
        if model.noise == "diagonal":
            noise = torch.where(varies, noise, model.raw_noise.detach().double())
        model.raw_noise.copy_(noise)
    return model


def gaussian_start(x: Tensor) -> dict[str, Tensor]:
    """Where a VAE's Gaussian likelihood starts, from the training data x (N, D): the decoder's
    output bias at the data's mean, and sigma at their root-mean-square standard deviation
    sqrt(mean_d Var(x_d)), shared by the dimensions (each then learns its own). At this start a
    decoder that ignores z is near the best Gaussian with one variance, so the reconstruction
    term weighs as much against the KL term as the data's spread warrants. The sigma is shared:
    a dimension of tiny variance would start with a tiny sigma, and its early errors would
    dominate the gradient. Constant data keep the default sigma."""
    var, mean = torch.var_mean(x.double(), dim=0, correction=0)
    sigma = var.mean().sqrt()
    return {"loc": mean.float()} | ({"scale": sigma.float()} if sigma > 0 else {})


def _user_model(config: Config, data_dim: int) -> LatentVariableModel:
    """``Class(**model.args)`` of the import path ``model.name``, given ``data_dim`` and
    ``latent_dim`` where its constructor takes them and the args leave them out."""
    m = config.model
    model = as_model(call_user(m.name, m.args, {"data_dim": data_dim, "latent_dim": m.latent_dim}, "model.args"))
    if model.data_dim != data_dim:
        raise DataError(f"the data have dimension {data_dim} but model {m.name} has data_dim {model.data_dim}")
    m.latent_dim = model.latent_dim  # the model's own size sizes the family (and is recorded)
    return model


def call_user(path: str, args: dict[str, Any], defaults: dict[str, Any], where: str) -> Any:
    """Call the object at import ``path`` with ``args``, adding each of ``defaults`` that its
    signature names and ``args`` lacks; a failure is one line naming ``where`` the args came from."""
    factory = import_object(path)
    if not callable(factory):
        raise ConfigError(f"{path} is not a class or function")
    accepted: Mapping[str, inspect.Parameter]
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in defaults.items() if k in accepted and k not in args} | args
    try:
        return factory(**kwargs)
    except Exception as err:  # the user's constructor: any error, in one line
        raise ConfigError(f"cannot build {path} with {where} {args}: {type(err).__name__}: {first_line(err)}") from None


def build_family(config: Config) -> Family:
    """The variational family named in ``config.inference.family``."""
    inf = config.inference
    if inf.family == "categorical":
        return CategoricalFamily(config.model.latent_dim, config.model.num_classes)
    if inf.family == "bernoulli":
        return BernoulliFamily(config.model.latent_dim)
    if inf.family == "hierarchical":
        return _hierarchical_family(config)
    if inf.family in FLOW_KINDS:
        return FlowFamily(config.model.latent_dim, inf.family, transforms=inf.flow_transforms, hidden=inf.flow_hidden)
    d = config.model.latent_dim
    if inf.family == "planar":
        return PlanarFamily(d, flows=inf.flow_length or 10, centred=inf.flow_centred)
    if inf.family == "radial":
        return RadialFamily(d, flows=inf.flow_length or 10, centred=inf.flow_centred)
    if inf.family == "sylvester":
        return SylvesterFamily(
            d,
            flows=inf.flow_length or 4,
            variant=inf.sylvester_variant,
            reflections=inf.householder_reflections,
            centred=inf.flow_centred,
        )
    return make_family(inf.family, config.model.latent_dim)


def _hierarchical_family(config: Config) -> HierarchicalFamily:
    """q(z_1 | lambda) q(z_2 | z_1) ... over the hvae's ``model.layers``, the networks between the
    layers as wide as the model's (``layer_hidden``, else ``hidden``), mirrored."""
    m = config.model
    if m.layers is None:
        raise ConfigError(f"family 'hierarchical' follows the latent layers of model 'hvae', not of {m.name!r}")
    widths = m.layer_hidden if m.layer_hidden is not None else m.hidden or []
    return HierarchicalFamily(m.layers, list(reversed(widths)), m.activation)


def build_posterior(config: Config, model: LatentVariableModel, n_train: int) -> Posterior:
    """The strategy's posterior: an encoder (MLP or ``model.network``'s convolutions, mirrored
    decoder sizes by default, or the user's ``inference.encoder``), a per-datapoint table, an
    encoder with refinement, or an iterative update network. An encoder is weight-normalised
    and/or denoising where ``inference.weight_norm`` / ``denoise`` say; one with
    ``inference.consistency`` needs 28x28 images (checked here, before any training).

    The first posterior built for a model whose prior is a VampPrior becomes that prior's q
    (:meth:`~avi.models.priors.VampPrior.attach`): the run's. A later one (``avi gaps``' new
    encoder, trained against the fixed model) leaves the model's prior as it is."""
    posterior = _posterior(config, model, n_train)
    vamp = getattr(model, "learned_prior", None)
    if isinstance(vamp, VampPrior) and not vamp.attached:
        vamp.attach(posterior)
    return posterior


def _posterior(config: Config, model: LatentVariableModel, n_train: int) -> Posterior:
    """:func:`build_posterior`'s posterior, before any VampPrior is given it."""
    inf = config.inference
    family = build_family(config)
    if inf.strategy == "per-datapoint":
        return LocalPosterior(n_train, family)
    if inf.strategy == "iterative":
        hidden = _encoder_hidden(config, model.data_dim)
        update = mlp([2 * family.param_size, *hidden, 2 * family.param_size], config.model.activation)
        return IterativePosterior(update, family, model, iterations=inf.iterations)
    if inf.consistency > 0:
        check_images((n_train, model.data_dim))
    encoder = _encoder(config, model.data_dim, family.param_size)
    if isinstance(encoder, Posterior):  # the user's own posterior, used as it is
        return encoder
    if inf.weight_norm:
        weight_normalize(encoder)
    if inf.denoise > 0:
        encoder = DenoisingEncoder(encoder, inf.denoise)
    if inf.strategy == "semi-amortized":
        return SemiAmortizedPosterior(
            encoder, family, model, steps=inf.refine_steps, lr=inf.refine_lr, backprop=inf.refine_backprop
        )
    return AmortizedPosterior(encoder, family)


def _encoder_hidden(config: Config, data_dim: int) -> list[int]:
    """``inference.encoder_hidden``, else the decoder's widths mirrored (:func:`default_hidden`
    where ``model.hidden`` is unset, as for a user's model; none for linear models)."""
    m = config.model
    if config.inference.encoder_hidden is not None:
        return list(config.inference.encoder_hidden)
    if m.name in ("ppca", "factor-analysis"):
        return []
    return list(reversed(default_hidden(data_dim) if m.hidden is None else m.hidden))


def _encoder(config: Config, data_dim: int, param_size: int) -> nn.Module:
    """x (B, D) -> lambda (B, P): the user's ``inference.encoder`` factory called as
    ``factory(data_dim, param_size, **encoder_args)``, else an MLP, or convolutions where
    ``model.network`` is ``conv`` (28x28 images)."""
    inf = config.inference
    if inf.encoder is None:
        build = conv_encoder if config.model.network == "conv" else mlp_encoder
        return build(data_dim, _encoder_hidden(config, data_dim), param_size, config.model.activation)
    encoder = call_user(
        inf.encoder, inf.encoder_args, {"data_dim": data_dim, "param_size": param_size}, "inference.encoder_args"
    )
    if not isinstance(encoder, nn.Module):
        raise ConfigError(f"encoder factory {inf.encoder} returned {type(encoder).__name__}, not a torch.nn.Module")
    return encoder


def build_objective(config: Config, posterior: nn.Module | None = None, *, epoch: int | None = None) -> Objective:
    """The run's objective, assembled here and nowhere else: the configured value
    (:meth:`~avi.runs.config.ObjectiveConfig.value`); for training epoch ``epoch`` (1-based),
    its KL weighted as ``config.remedies`` say (:class:`~avi.objectives.weighted.WeightedKL`:
    the schedule's weight of the epoch, free bits) or tempered (:class:`~avi.objectives.tempered.Tempered`:
    the epoch's inverse temperature); given the run's encoder ``posterior``, minus
    the consistency penalty where ``inference.consistency`` > 0
    (:class:`~avi.objectives.consistency.Consistency`). The run's estimator state is
    ``build_objective(config).init_state(data_dim)``."""
    objective = config.objective.value()
    if epoch is not None and weights_kl(config):
        objective = WeightedKL(objective, weight=epoch_kl_weight(config, epoch), free_bits=config.remedies.free_bits)
    if epoch is not None and config.remedies.temper > 0:
        objective = Tempered(objective, inverse_temperature=epoch_inverse_temperature(config, epoch))
    inf = config.inference
    if posterior is not None and inf.consistency > 0:
        objective = Consistency(objective, posterior, make_transform(inf.transform), inf.consistency)
    return objective


def prepare_data(x: np.ndarray | torch.Tensor, config: Config, name: str = "data") -> Dataset:
    """Turn raw observations into a :class:`Dataset` as the config says: binarised, or
    standardised by ``data.mean`` and ``data.sd`` (the training split's, which :func:`load_splits`
    records) where ``data.standardize`` is set.

    Raises :class:`DataError` for NaN/inf, for values that cannot be binarised, or for data whose
    dimension differs from the standardisation's.
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise DataError(f"{name} contains NaN or infinite values")
    d = config.data
    if d.binarize != "none" and ((x < 0) | (x > 1)).any():
        gaussian = "--likelihood gaussian" if config.model.name == "vae" else "--model vae --likelihood gaussian"
        raise DataError(
            f"{name} has values outside [0, 1], which a Bernoulli likelihood cannot model: use a Gaussian "
            f"likelihood ({gaussian}) or scale the data to [0, 1]"
        )
    if d.standardize:
        if d.mean is None or d.sd is None:
            raise ConfigError("data.standardize needs data.mean and data.sd; load_splits records the training data's")
        x = standardize(x, d.mean, d.sd, name)
    dataset = Dataset(x, dynamic=d.binarize != "none")
    return dataset.binarized(d.seed) if d.binarize in ("static", "static-mnist") else dataset


def _split(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    held = int(round(n * fraction))
    return order[held:], order[:held]


def _static_mnist_splits(subset: int | None) -> Splits:
    """The static-MNIST protocol's fixed splits (:func:`avi.data.mnist.static_mnist`), the
    first ``subset`` training images where given."""
    data = static_mnist()

    def split(name: str, count: int | None = None) -> Dataset:
        x, y = data[name]
        return Dataset(torch.from_numpy(x[:count]).float(), torch.from_numpy(y[:count]), dynamic=False)

    return Splits(split("train", subset), split("validation"), split("test"))


def _standard_prior(config: Config) -> Config:
    """``config`` for the model that draws synthetic data: the run's, with p(z) = N(0, I) in place
    of a learned prior (untrained, and a VampPrior has no encoder yet to mix)."""
    if config.model.prior == "normal":
        return config
    truth = config.model_copy(deep=True)
    truth.model.prior = "normal"
    return truth


def load_splits(config: Config) -> Splits:
    """Training, validation and test data from ``config.data``; evaluation splits get one fixed
    binarisation (seed ``data.seed + 1``) so that their scores are reproducible.

    Raises :class:`DataError` where the test split (which ``avi evaluate`` scores) or the
    training split would be empty; the validation split may be (``validation_fraction = 0``).
    """
    d = config.data
    if d.binarize == "static-mnist":
        return _static_mnist_splits(d.subset)
    generator = torch.Generator().manual_seed(d.seed)
    labels: Tensor | None = None
    y_test: Tensor | None
    if d.source == "mnist":
        mnist = load_mnist()
        x_all = torch.from_numpy(mnist["train"][0]).float() / 255
        labels = torch.from_numpy(mnist["train"][1])
        x_test = torch.from_numpy(mnist["test"][0]).float() / 255
        y_test = torch.from_numpy(mnist["test"][1])
    else:
        if d.source == "synthetic":  # sampled from the model itself, sized by the same settings and the data's
            with sized_by(settings_of(config, (*MODEL_SIZES, "data.synthetic_points", "data.synthetic_dim"))):
                truth = build_model(_standard_prior(config), d.synthetic_dim)
                x_all = truth.sample(d.synthetic_points, generator)[0]
        else:
            x_np, y_np = load_array_file(d.source)
            x_all = torch.as_tensor(x_np, dtype=torch.float32)
            labels = None if y_np is None else torch.as_tensor(y_np)
        keep, test_index = _split(x_all.shape[0], d.test_fraction, generator)
        if test_index.numel() == 0:  # avi evaluate scores the test split: fail here, not after training
            raise DataError(
                f"{x_all.shape[0]} data points are too few for test_fraction {d.test_fraction} (validation_fraction "
                f"{d.validation_fraction}): the test split would be empty; "
                "use more points or a larger data.test_fraction"
            )
        x_test, y_test = x_all[test_index], None if labels is None else labels[test_index]
        x_all, labels = x_all[keep], None if labels is None else labels[keep]
    train_index, val_index = _split(x_all.shape[0], d.validation_fraction, generator)
    if d.subset is not None:
        train_index = train_index[: d.subset]
    if train_index.numel() == 0:
        raise DataError(f"no training points left from {x_all.shape[0]} after the validation and test splits")
    if d.standardize and (d.mean is None or d.sd is None):  # recorded in config.json: evaluation reuses them
        d.mean, d.sd = moments(x_all[train_index])

    def make(x: torch.Tensor, y: torch.Tensor | None, name: str, evaluation: bool) -> Dataset:
        dataset = prepare_data(x, config, name)
        dataset = Dataset(dataset.x, y, dataset.dynamic)
        return dataset.binarized(d.seed + 1) if evaluation else dataset

    pick = (lambda i: None) if labels is None else (lambda i: labels[i])
    return Splits(
        make(x_all[train_index], pick(train_index), "training data", False),
        make(x_all[val_index], pick(val_index), "validation data", True),
        make(x_test, y_test, "test data", True),
    )
