"""Run configuration: validated by pydantic, read from TOML, overridden by flags, filled by presets.

A config is nested sections (``model``, ``data``, ``inference``, ``objective``, ``remedies``,
``train``, ``evaluate``, ``tracking``). Unknown keys, presets and options are errors that name the key, and so is a
setting given where it does not apply (``objective.k`` with the elbo objective,
``inference.refine_steps`` without the semi-amortized strategy: :data:`_APPLIES`).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from avi.errors import ConfigError, first_line
from avi.evaluation.bounds import MAX_BUDGET_MIB
from avi.families.discrete import DISCRETE_FAMILIES
from avi.nn import WIDE_UNITS
from avi.objectives.schedules import KLSchedule
from avi.objectives.select import ESTIMATORS, OBJECTIVES, Objective, objective_named, takes
from avi.objectives.tempered import Tempered
from avi.objectives.weighted import WeightedKL
from avi.runs.imports import is_import_path, normalise_import_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomllib parser as its backport, tomli
    import tomli as tomllib

__all__ = [
    "Config",
    "DEVICE_FORMS",
    "MAX_SEED",
    "MAX_THREADS",
    "DISCRETE_MODELS",
    "FAMILY_NAMES",
    "HVAE_LAYERS",
    "LINEAR_MODELS",
    "LINEAR_TRAIN",
    "PRESETS",
    "PRIOR_COMPONENTS",
    "STRATEGY_NAMES",
    "check_collapse_options",
    "check_device",
    "epoch_inverse_temperature",
    "epoch_kl_weight",
    "kl_schedule",
    "learning_rate",
    "load_config",
    "merge_tables",
    "resolve_config",
    "weights_kl",
]


#: seeds: 63 bits, so that the offsets the runs add (``train.seed + 1``, ``+ epoch``) stay within
#: the 64 bits of torch's generators (``manual_seed`` takes integers below 2^64)
MAX_SEED = 2**63 - 1
#: intra-op threads of a process: a fixed bound, so that a run's config reads back on any machine
#: (more threads than cores only slows a run down; torch overflows on 2^31)
MAX_THREADS = 4096
#: the devices a run trains on, ``cuda:N`` with N >= 0 a GPU's index
DEVICE_FORMS = ("cpu", "cuda", "cuda:N", "auto")
_DEVICE = re.compile(r"cpu|cuda|auto|cuda:(0|[1-9][0-9]*)")
#: a layer's width
Width = Annotated[int, Field(gt=0)]


def check_device(name: str) -> str:
    """``name`` if it is one of :data:`DEVICE_FORMS` (whether this machine has it is
    :func:`avi.runs.load.resolve_device`'s question), else :class:`ConfigError`."""
    if not _DEVICE.fullmatch(name):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N (N a GPU's index) or auto")
    return name


class _Section(BaseModel):
    """Strict settings: a bool is not a number, a float is not an int (an int may stand for a
    float), nothing is parsed from a string, and every float is finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """The generative model: ``vae`` (MLP decoder), ``ppca`` or ``factor-analysis``; or one with
    discrete latents (Bernoulli likelihood, :mod:`avi.models.discrete`): ``discrete-vae``,
    ``latent_dim`` categorical variables of ``num_classes`` classes each under a uniform prior,
    or ``sbn``, a sigmoid belief net of ``latent_dim`` binary units (``hidden = []``: one layer).
    ``hvae``: a VAE with several stochastic layers (:mod:`avi.models.hierarchical`), ``layers``
    their sizes from z_1 next to x up (default :data:`HVAE_LAYERS`, Burda et al.'s), z their
    concatenation (``latent_dim`` is their sum); ``hidden`` the widths between x and z_1,
    ``layer_hidden`` those between consecutive layers (unset: ``hidden``'s); its posterior is by
    default the ``hierarchical`` family, q(z_1 | x) q(z_2 | z_1) ... (preset ``burda-2l``).
    ``hidden`` (like the other layer sizes of a config) is a list of positive widths; unset, the
    model gets one layer sized by the data's dimension (:func:`avi.runs.build.default_hidden`:
    400 units for MNIST), recorded in the run's config.json when the model is built.
    ``activation``: of every hidden layer, model and encoder; ``maxout`` makes each hidden unit the
    largest of :data:`avi.nn.MAXOUT_PIECES` = 4 linear pieces (Rezende and Mohamed's 2015
    networks) and ``gated`` a gated linear unit, (W x + b) * sigmoid(V x + c) (Tomczak and
    Welling's 2018 networks); both in MLPs only, not the conv networks or the MADE decoder.
    ``likelihood``: ``bernoulli`` (binary data, or data in [0, 1] binarised) or ``gaussian``
    (real-valued data; it starts at the training data's mean and standard deviation).
    ``network``: the VAE's networks, ``mlp`` or, for 28x28 images (784 values per point), ``conv``:
    an encoder of two stride-2 convolutions (32 and 64 channels) and a decoder of two transposed
    convolutions, with ``hidden`` the widths of their linear layers (preset ``mnist-conv``); a
    user's ``inference.encoder`` replaces the conv encoder.
    ``prior``: the VAE's p(z) (MLP or conv decoder): ``normal``, N(0, I); ``vamp``, the VampPrior
    (Tomczak and Welling 2018), the mixture of the encoder's posteriors at ``prior_components``
    learned pseudo-inputs (the amortized strategy, a Gaussian family); or ``mog``, a mixture of
    ``prior_components`` Gaussians with learned means, scales and weights
    (:mod:`avi.models.priors`). Unset, ``prior_components`` is :data:`PRIOR_COMPONENTS`'.

    Or a user's own model by import path, ``path/to/file.py:Class`` or ``package.module:Class``
    (docs/custom-models.md): built as ``Class(**args)``, with ``data_dim`` (the data's) and
    ``latent_dim`` added where the constructor takes them and ``args`` does not set them.
    """

    name: str = "vae"
    preset: str | None = None
    latent_dim: int = Field(20, ge=1)
    hidden: list[Width] | None = None
    activation: Literal["relu", "tanh", "elu", "softplus", "maxout", "gated"] = "relu"
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    #: the VAE's decoder: an MLP, or a MADE conditioned on z (autoregressive, Bernoulli only)
    decoder: Literal["mlp", "made"] = "mlp"
    #: the VAE's networks for 28x28 images: MLPs, or convolutions in the encoder and transposed
    #: convolutions in the decoder (``hidden`` their linear layers' widths)
    network: Literal["mlp", "conv"] = "mlp"
    #: the VAE's prior p(z): N(0, I), the VampPrior, or a learned mixture of Gaussians
    prior: Literal["normal", "vamp", "mog"] = "normal"
    #: components of a learned prior (the VampPrior's pseudo-inputs); unset: PRIOR_COMPONENTS'
    prior_components: int | None = Field(None, ge=1)
    #: classes C of each categorical latent of the discrete-vae
    num_classes: int = Field(10, ge=2)
    #: the hvae's stochastic layers' sizes, z_1 (next to x) first; unset: HVAE_LAYERS
    layers: list[Width] | None = Field(None, min_length=1)
    #: the hvae's widths between consecutive stochastic layers (p(z_l | z_l+1), q(z_l+1 | z_l)); unset: hidden's
    layer_hidden: list[Width] | None = None
    #: constructor arguments of a user's model (``[model.args]``)
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_or_import_path(cls, name: str) -> str:
        if is_import_path(name):
            return normalise_import_path(name)
        if name not in BUILTIN_MODELS:
            raise ValueError(
                f"unknown model {name!r}; choose from {list(BUILTIN_MODELS)} or give your own as "
                "'path/to/file.py:Class' or 'package.module:Class'"
            )
        return name

    @property
    def custom(self) -> bool:
        """Whether the model is a user's, named by import path."""
        return is_import_path(self.name)


class DataConfig(_Section):
    """Where data comes from: ``mnist`` (bundled), ``synthetic`` (the model's sampler) or a file path.

    ``binarize`` applies to Bernoulli models only (default ``dynamic``). ``static-mnist`` is the
    static protocol of MNIST (:func:`avi.data.mnist.static_mnist`): one fixed binarisation of
    the 50,000/10,000/10,000 train/validation/test split, the same on every machine, in place
    of ``validation_fraction``. MNIST keeps its 10,000
    test images; other sources hold out ``test_fraction``. ``validation_fraction`` of the rest
    is held out for validation.

    ``standardize`` (data that are not binarised): every split, and data given to ``avi evaluate
    --data``, becomes (x - mean) / sd per dimension, mean and sd the training split's (after
    ``subset``), recorded as ``mean`` and ``sd``; log-likelihoods are then of the standardised data.
    """

    source: str = "mnist"
    binarize: Literal["dynamic", "static", "static-mnist", "none"] | None = None
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    subset: int | None = Field(None, ge=1)
    synthetic_points: int = Field(10_000, ge=2)
    synthetic_dim: int = Field(784, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    #: standardise each dimension, (x - mean) / sd, by the training split's statistics
    standardize: bool = False
    #: the statistics standardisation uses: the training split's (recorded when the data load;
    #: sd 1 for a constant dimension), reused for the other splits and ``avi evaluate --data``
    mean: list[float] | None = None
    sd: list[Annotated[float, Field(gt=0)]] | None = None


StrategyName = Literal["amortized", "per-datapoint", "semi-amortized", "iterative"]
FamilyName = Literal[
    "mean-field", "full-rank", "iaf", "nsf", "planar", "radial", "sylvester", "categorical", "bernoulli",
    "hierarchical",
]  # fmt: skip
STRATEGY_NAMES = get_args(StrategyName)
FAMILY_NAMES = get_args(FamilyName)


class InferenceConfig(_Section):
    """The inference strategy and variational family.

    - ``amortized``: q(z|x) = family(encoder(x)).
    - ``per-datapoint``: a parameter table, ``local_lr`` for its (sparse) Adam; new points get
      ``infer_steps`` steps, in blocks of ``infer_block`` points whose noise is seeded by the
      block (so that ``avi evaluate`` on several processes gives one process's numbers);
      validation points get ``validation_steps`` more steps each epoch.
    - ``semi-amortized``: the encoder's output refined by ``refine_steps`` gradient steps of size
      ``refine_lr`` (SA-VAE; 0.02 suits an MNIST VAE, where 0.1 already overshoots);
      ``refine_backprop=false`` stops the gradient through them.
    - ``iterative``: ``iterations`` learned updates from (lambda, grad ELBO) (Marino et al. 2018).

    A model with discrete latents takes the matching discrete family (``categorical`` for the
    discrete-vae, ``bernoulli`` for the sbn; the default for those models) and the amortized
    strategy. The ``hierarchical`` family, q(z_1 | x) prod_l q(z_l | z_(l-1)), follows the layers of
    the hvae (its default there) and holds the networks between them. Flow families (``iaf``,
    ``nsf``) have ``flow_transforms`` transforms with ``flow_hidden`` units.
    The flows of Rezende and Mohamed (2015), ``planar`` and ``radial``, and van den Berg et al.'s
    (2018) ``sylvester`` take all their parameters from the encoder (or the per-point table):
    ``flow_length`` layers (default 10, 10 and 4), Sylvester's ``sylvester_variant``
    (``householder``, with ``householder_reflections`` reflections per layer, or ``triangular``).
    ``flow_centred`` places each of their layers about the image of q's base mean under the
    layers before it (the same family, parametrised so that a planar hyperplane starts and tends
    to stay inside q's mass: :func:`avi.families.finite_flow.centred_layers`).

    Amortized inference regularisation (Shu et al. 2018) of an encoder of x (``amortized`` and
    ``semi-amortized``): ``denoise`` = sigma > 0 adds N(0, sigma^2 I) noise to the encoder's input
    in training only; ``weight_norm`` weight-normalises its linear layers. Consistency
    regularisation (Sinha and Dieng 2021): ``consistency`` = w > 0 subtracts
    w * KL(q(z|x) || q(z|t(x))) from the objective, t a random ``transform`` of 28x28 images
    (``translate``: up to 2 pixels; ``rotate``: up to 15 degrees).
    """

    strategy: StrategyName = "amortized"
    family: FamilyName = "mean-field"
    encoder_hidden: list[Width] | None = None
    #: a user's encoder by import path (``file.py:factory`` or ``package.module:factory``), called
    #: as ``factory(data_dim, param_size, **encoder_args)``: a module x (B, D) -> lambda (B, P),
    #: or a :class:`~avi.families.posterior.Posterior` used as it is
    encoder: str | None = None
    encoder_args: dict[str, Any] = Field(default_factory=dict)
    local_lr: float = Field(0.1, gt=0)
    infer_steps: int = Field(500, ge=0)
    infer_block: int = Field(1000, ge=1)
    validation_steps: int = Field(50, ge=0)
    refine_steps: int = Field(10, ge=0)
    refine_lr: float = Field(0.02, gt=0)
    refine_backprop: bool = True
    iterations: int = Field(5, ge=1)
    flow_transforms: int = Field(2, ge=1, le=1000)
    flow_hidden: list[Width] = Field(default_factory=lambda: [64, 64])
    flow_length: int | None = Field(None, ge=1, le=1000)
    flow_centred: bool = False
    sylvester_variant: Literal["householder", "triangular"] = "householder"
    householder_reflections: int = Field(8, ge=1, le=1000)
    denoise: float = Field(0.0, ge=0)
    weight_norm: bool = False
    consistency: float = Field(0.0, ge=0)
    transform: Literal["translate", "rotate"] = "translate"

    @field_validator("encoder")
    @classmethod
    def _import_path(cls, encoder: str | None) -> str | None:
        if encoder is not None and not is_import_path(encoder):
            raise ValueError(f"encoder {encoder!r} must be 'path/to/file.py:factory' or 'package.module:factory'")
        return None if encoder is None else normalise_import_path(encoder)


class ObjectiveConfig(_Section):
    """The training bound, one of the objective values of :data:`avi.objectives.OBJECTIVES`
    (their names and estimators are this section's choices, their fields its settings, and
    :meth:`value` makes the value, which checks itself): ``elbo`` with ``num_samples`` samples,
    or one with ``k`` samples per point: ``iwae``; ``renyi``, the VR bound of order ``alpha`` (1
    is the ELBO, 0 IWAE); ``cubo``, where q minimises the chi upper bound of order ``cubo_order``
    > 1 and the model follows the IWAE gradient (the logged training objective is then -CUBO);
    ``rws``, reweighted wake-sleep (the model on IWAE, q on the inclusive KL).

    ``estimator`` chooses the gradient (default ``reparam``; for a model with discrete latents,
    which no reparameterised estimator applies to, ``gumbel`` for elbo and ``vimco`` for iwae);
    ``gumbel`` relaxes the discrete samples at ``temperature`` > 0, and with ``straight_through``
    uses the hard samples in the forward pass."""

    name: Literal[tuple(OBJECTIVES)] = "elbo"  # type: ignore[valid-type]
    num_samples: int = Field(1, ge=1)
    k: int = Field(5, ge=1)
    analytic_kl: bool = True
    alpha: float = 0.5
    cubo_order: float = Field(2.0, gt=1)
    #: the gradient estimator (:mod:`avi.objectives.estimators`), one of the objective's ``estimators``
    estimator: Literal[ESTIMATORS] = "reparam"  # type: ignore[valid-type]
    temperature: float = Field(1.0, gt=0)
    straight_through: bool = False

    def value(self) -> Objective:
        """The objective value these settings make (CUBO's ``order`` is ``cubo_order``);
        raises :class:`ConfigError` as the value does."""
        return objective_named(self.name, **self.model_dump(exclude={"name"}), order=self.cubo_order)


class TrainConfig(_Section):
    """Adam on minibatches. ``lr_schedule="burda"`` is Burda et al.'s (2016): stage i = 0..7 lasts
    3^i epochs at lr * 10^(-i/7) (3,280 epochs in all); ``epochs`` may stop it earlier.
    ``"cosine"`` (Loshchilov and Hutter 2017, without restarts) decays lr to 0 over ``epochs``:
    lr * (1 + cos(pi * t)) / 2 at the fraction t of the epochs after the warm-up. ``lr_warmup``
    epochs first raise it linearly, lr * e / lr_warmup in epoch e (any schedule). ``"plateau"``
    halves the rate whenever the training objective has gone ``lr_patience`` epochs without
    rising by more than ``lr_tolerance`` x |its best| (reduce-on-plateau), and ends the run as
    converged at the ``lr_reductions``-th plateau (:class:`avi.runs.hooks.LearningRate`).
    PPCA and factor analysis default to ``plateau``, lr 0.01 and at most 2,000 epochs
    (:data:`LINEAR_TRAIN`), which on 1,620 points of 10 dimensions end after about 200-350 epochs
    0.0005-0.008 nats per point from the maximum likelihood; every other model to a constant
    0.001 for 10 epochs.
    ``precision="bf16"`` runs the networks' products in bfloat16 under autocast, the bound in
    float32 (:mod:`avi.precision`); without bf16 hardware it says so and trains in fp32.
    ``compile=True`` trains through ``torch.compile`` of the step (forward pass and bound,
    TorchInductor; aggressive epochs stay eager): the eager step's bound and gradients for the
    same noise up to float rounding, though Inductor draws its own noise; faster where
    elementwise work is a large share of a step (several samples per point at small batches);
    the first steps of each run or resume pay the compilation, seconds to a minute.
    ``diagnostics_every`` = N records the collapse diagnostics (:class:`avi.runs.hooks.Validation`)
    at epochs N, 2N, ..., at every aggressive epoch and at the run's last as far as validation
    knows it (the budget's end, plateau convergence, early stopping; not an interrupt); 0: only there.
    ``ema_decay`` = d in (0, 1) keeps an exponential moving average of the dense weights after
    every step (:mod:`avi.inference.averaging`, with its warm-up): validation, the collapse
    diagnostics, early stopping's best.pt and every reader of the run (``avi evaluate``,
    ``avi gaps``, ``avi report``, :func:`avi.load_run`) use the averaged weights, while training
    and its checkpointed state stay raw."""

    epochs: int = Field(10, ge=0)
    batch_size: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "burda", "cosine", "plateau"] = "constant"
    lr_warmup: int = Field(0, ge=0)
    #: the plateau schedule: epochs without improvement before the rate halves
    lr_patience: int = Field(20, ge=1)
    #: the plateau schedule: the relative rise of the training objective that counts as improvement
    lr_tolerance: float = Field(1e-4, ge=0)
    #: the plateau schedule: the plateau that ends the run, where the rate would fall to lr / 2^lr_reductions
    lr_reductions: int = Field(5, ge=1)
    adam_eps: float = Field(1e-8, gt=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    #: stop after this many epochs without a better validation ELBO, keeping the best as best.pt
    early_stop: int | None = Field(None, ge=1)
    #: the collapse diagnostics at epochs N, 2N, ... (1-based) and at the run's last (0: at its last only)
    diagnostics_every: int = Field(1, ge=0)
    #: the decay of the weights' exponential moving average (None: no average)
    ema_decay: float | None = Field(None, gt=0, lt=1)

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        return check_device(device)


class RemediesConfig(_Section):
    """Posterior-collapse remedies, combinable (see :mod:`avi.objectives.schedules`).

    The ELBO's KL term is weighted by beta x warm-up x cycle, the weight of each epoch taken
    at its midpoint: ``beta`` (Higgins et al. 2017); a linear warm-up from ``kl_start_weight``
    at epoch ``kl_warmup_start`` to 1 at epoch ``kl_warmup`` (0: none); ``kl_cycles``
    cyclical-annealing cycles over the run, rising for ``kl_cycle_ratio`` of each (Fu et al.
    2019). ``free_bits`` nats per latent dimension: the KL term is sum_k max(lambda, KL_k)
    (Kingma et al. 2016; needs a mean-field q). ``aggressive``: aggressive encoder training
    while the mutual information rises (He et al. 2019). ``temper``: the annealed free energy
    of Rezende and Mohamed (2015), E_q[beta log p(x, z) - log q], the inverse temperature beta
    rising linearly from ``temper_start`` to 1 over the first ``temper`` epochs (0: none;
    :class:`~avi.objectives.tempered.Tempered`); it replaces the KL weighting, so it does not
    combine with beta, the KL warm-up, cycles or free bits.
    """

    beta: float = Field(1.0, ge=0)
    kl_warmup: int = Field(0, ge=0)
    kl_warmup_start: int = Field(0, ge=0)
    kl_start_weight: float = Field(0.0, ge=0, le=1)
    kl_cycles: int = Field(0, ge=0)
    kl_cycle_ratio: float = Field(0.5, gt=0, le=1)
    free_bits: float = Field(0.0, ge=0)
    aggressive: bool = False
    temper: int = Field(0, ge=0)
    temper_start: float = Field(0.01, gt=0, le=1)


class EvaluateConfig(_Section):
    """Importance-sampled log-likelihood: k samples per point, ``chunk_size`` samples for
    ``batch_size`` points at a time; unset sizes follow from ``memory_budget`` (MiB of working
    memory per process) or default to cache-sized chunks (avi.evaluation.bounds.chunk_sizes)."""

    k: int = Field(5000, ge=1)
    batch_size: int | None = Field(None, ge=1)
    chunk_size: int | None = Field(None, ge=1)
    memory_budget: float | None = Field(None, gt=0, le=MAX_BUDGET_MIB)


class TrackingConfig(_Section):
    """Optional mirrors of the per-epoch metrics: TensorBoard (``RUN_DIR/tensorboard``) and
    MLflow (``mlflow_uri``, default a SQLite file ``RUN_DIR/mlflow.db``)."""

    tensorboard: bool = False
    mlflow: bool = False
    mlflow_uri: str | None = None


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    remedies: RemediesConfig = Field(default_factory=RemediesConfig)

    @model_validator(mode="after")
    def _linear_defaults(self) -> Config:
        """PPCA and factor analysis train, where the user set none of them, with the settings of
        :data:`LINEAR_TRAIN` (a run that stops when it has converged) and a full-rank Gaussian q,
        the family of their exact posterior: with a mean-field q the bound is tight only once W's
        columns turn orthogonal, which the fit approaches so slowly that a plateau rule stops it
        0.05 nats short."""
        if self.model.name in LINEAR_MODELS:
            for key, value in LINEAR_TRAIN.items():
                if key not in self.train.model_fields_set:
                    setattr(self.train, key, value)
            if "family" not in self.inference.model_fields_set:  # the exact posterior's family
                self.inference.family = "full-rank"
        return self

    @model_validator(mode="after")
    def _check(self) -> Config:
        bernoulli = self.model.name in ("vae", "hvae", *DISCRETE_MODELS) and self.model.likelihood == "bernoulli"
        if self.data.binarize is None:
            self.data.binarize = "dynamic" if bernoulli else "none"
        elif self.data.binarize != "none" and not bernoulli and not self.model.custom:
            raise ValueError(f"data.binarize={self.data.binarize!r} needs a Bernoulli likelihood; use 'none'")
        if self.data.binarize == "static-mnist" and self.data.source != "mnist":
            source = self.data.source
            raise ValueError(f"data.binarize='static-mnist' is a protocol of MNIST, not of data.source {source!r}")
        return self

    @model_validator(mode="after")
    def _check_encoder_regularisers(self) -> Config:
        inf = self.inference
        if (inf.denoise > 0 or inf.weight_norm or inf.consistency > 0) and inf.strategy not in (
            "amortized",
            "semi-amortized",
        ):
            raise ValueError(
                f"inference.denoise, weight_norm and consistency regularise an encoder of x; strategy {inf.strategy!r} "
                "has none (use 'amortized' or 'semi-amortized')"
            )
        return self

    @model_validator(mode="after")
    def _check_discrete(self) -> Config:
        m, inf, o = self.model, self.inference, self.objective
        family = DISCRETE_MODELS.get(m.name)
        if family is None:
            if inf.family in DISCRETE_MODELS.values():
                raise ValueError(
                    f"family {inf.family!r} is for a model with discrete latents "
                    "(discrete-vae: categorical, sbn: bernoulli)"
                )
            return self
        if "family" not in inf.model_fields_set:
            inf.family = family
        elif inf.family != family:
            raise ValueError(
                f"model {m.name!r} has {family} latents: inference.family must be {family!r}, not {inf.family!r}"
            )
        if "estimator" not in o.model_fields_set:  # reparam does not apply: the estimator of the bound
            o.estimator = {"elbo": "gumbel", "iwae": "vimco"}.get(o.name, "reparam")
        if m.likelihood != "bernoulli":
            raise ValueError(f"model {m.name!r} has a Bernoulli likelihood, not {m.likelihood!r}")
        if inf.strategy != "amortized":
            raise ValueError(
                f"model {m.name!r} trains an amortized posterior in avi fit, not strategy {inf.strategy!r}"
            )
        return self

    @model_validator(mode="after")
    def _check_hierarchical(self) -> Config:
        """The hvae's z is its layers end to end: ``latent_dim`` is their sum (unset ``layers``
        are :data:`HVAE_LAYERS`), and its family by default the hierarchical posterior. That
        family follows the hvae's layers alone; free bits need a prior that factorises over the
        dimensions, which p(z_1 | z_2) does not."""
        m, inf = self.model, self.inference
        if m.name != "hvae":
            if inf.family == "hierarchical":
                raise ValueError(f"family 'hierarchical' follows the latent layers of model 'hvae', not of {m.name!r}")
            return self
        if m.layers is None:
            m.layers = list(HVAE_LAYERS)
        if "latent_dim" in m.model_fields_set and m.latent_dim != sum(m.layers):
            raise ValueError(
                f"the hvae's latent_dim is the sum of model.layers {m.layers}, {sum(m.layers)}, not {m.latent_dim}: "
                "set model.layers"
            )
        m.latent_dim = sum(m.layers)
        if "family" not in inf.model_fields_set:
            inf.family = "hierarchical"
        if self.remedies.free_bits > 0:
            raise ValueError("free bits need a prior that factorises over the latent dimensions; the hvae's does not")
        return self

    @model_validator(mode="after")
    def _check_estimator(self) -> Config:
        """The objective value checks itself when made; then its family: discrete or not, and
        Gaussian for an estimator that cuts q's parameters from the graph (stl, dreg)."""
        objective, family = self.objective.value(), self.inference.family
        objective.check_family(discrete=family in DISCRETE_FAMILIES)
        if objective.needs_gaussian and family not in ("mean-field", "full-rank"):
            raise ValueError(
                f"the {self.objective.estimator} estimator needs a Gaussian family (mean-field or full-rank), "
                f"not {family!r}"
            )
        return self

    @model_validator(mode="after")
    def _check_early_stop(self) -> Config:
        if self.train.early_stop is not None and self.data.validation_fraction == 0:
            raise ValueError("train.early_stop watches the validation ELBO: it needs data.validation_fraction > 0")
        return self

    @model_validator(mode="after")
    def _check_collapse(self) -> Config:
        check_collapse_options(self)
        return self

    @model_validator(mode="after")
    def _check_network(self) -> Config:
        """The conv networks are the VAE's, in place of its MLPs (not of a MADE decoder); maxout
        and gated units are MLP layers."""
        m = self.model
        if m.network == "conv" and (m.name != "vae" or m.decoder != "mlp"):
            other = f"model {m.name!r}" if m.name != "vae" else f"the {m.decoder} decoder"
            raise ValueError(f"model.network 'conv' is for the vae with its own decoder, not {other}")
        if m.activation in WIDE_UNITS and (m.network == "conv" or m.decoder == "made"):
            other = "model.network 'conv'" if m.network == "conv" else "the made decoder"
            raise ValueError(f"model.activation {m.activation!r} builds MLP layers, not {other}")
        return self

    @model_validator(mode="after")
    def _check_prior(self) -> Config:
        """A learned prior is the VAE's with an MLP or conv decoder; the VampPrior mixes the Gaussian
        posteriors of an encoder of x; neither factorises over dimensions, as free bits need.
        Unset ``prior_components`` become :data:`PRIOR_COMPONENTS`'."""
        m, inf = self.model, self.inference
        if m.prior == "normal":
            return self
        if m.name != "vae" or m.decoder != "mlp":
            other = f"model {m.name!r}" if m.name != "vae" else f"the {m.decoder} decoder"
            raise ValueError(f"model.prior {m.prior!r} is for the vae with an MLP or conv decoder, not {other}")
        if m.prior == "vamp" and (inf.strategy != "amortized" or inf.family not in ("mean-field", "full-rank")):
            raise ValueError(
                "model.prior 'vamp' mixes the Gaussian posteriors of an encoder of x: it needs strategy 'amortized' "
                f"and family mean-field or full-rank, not {inf.strategy!r} and {inf.family!r}"
            )
        if m.prior == "vamp" and inf.denoise > 0:  # the prior trained would not be the one evaluated
            raise ValueError(
                "model.prior 'vamp' runs the encoder on its pseudo-inputs, which inference.denoise would corrupt "
                "while training: set inference.denoise = 0"
            )
        if self.remedies.free_bits > 0:
            raise ValueError(
                f"free bits need a prior that factorises over the latent dimensions; model.prior {m.prior!r} does not"
            )
        if m.prior_components is None:
            m.prior_components = PRIOR_COMPONENTS[m.prior]
        return self

    @model_validator(mode="after")
    def _check_applicable(self, info: ValidationInfo) -> Config:
        """A setting given where it does not apply would be recorded in config.json and ignored:
        an error, for the settings the user set (``model_fields_set``) of :data:`_APPLIES`. Not
        checked under the context ``{"stored": True}``: a run's config.json sets every field."""
        if (info.context or {}).get("stored"):
            return self
        for settings, depends, applies, owner, hint in _APPLIES:
            value = _setting(self, depends)
            for setting in settings:
                section, field = setting.split(".")
                if field in getattr(self, section).model_fields_set and not applies(value):
                    raise ValueError(
                        f"{setting} applies to {owner}, not {depends} = {value!r}" + (f": {hint}" if hint else "")
                    )
        return self


#: models with discrete latents, and the variational family each takes
DISCRETE_MODELS: dict[str, FamilyName] = {"discrete-vae": "categorical", "sbn": "bernoulli"}
#: components of a learned prior where model.prior_components is unset: Tomczak and Welling's 500
#: pseudo-inputs for the VampPrior, and for a mixture of Gaussians one per class of MNIST
PRIOR_COMPONENTS = {"vamp": 500, "mog": 10}
#: the linear-Gaussian models (exact log p(x))
LINEAR_MODELS = ("ppca", "factor-analysis")
#: the models avi builds by name; any other model is named by import path
BUILTIN_MODELS = ("vae", "hvae", *LINEAR_MODELS, *DISCRETE_MODELS)
#: the hvae's stochastic layers where model.layers is unset: Burda et al.'s (2016) two, z_1 of
#: 100 units and z_2 of 50
HVAE_LAYERS = (100, 50)
#: The training defaults of the linear-Gaussian models: a larger rate, halved on each plateau of
#: the training objective until the run converges, within a generous cap on the epochs. With
#: them ``avi fit --model ppca`` (or factor-analysis) reaches the maximum likelihood within 0.05
#: nats per point (tests/runs/test_convergence.py) where 10 epochs at 0.001 stop far below it.
LINEAR_TRAIN: dict[str, Any] = {"lr_schedule": "plateau", "lr": 1e-2, "epochs": 2000}

#: Settings that apply only where another setting holds: (settings, the setting they depend on,
#: whether they apply at its value, what they belong to, a hint), from their readers (runs/build.py,
#: the objective values' fields (:func:`avi.objectives.select.takes`), runs/train.py,
#: runs/collapse.py, runs/tracking.py). Not here, as other
#: commands read them: objective.cubo_order (``avi evaluate --cubo``, any objective) and
#: inference.flow_transforms and flow_hidden (``avi gaps --family iaf|nsf``, any family).
_APPLIES: tuple[tuple[tuple[str, ...], str, Callable[[Any], bool], str, str], ...] = (
    (
        ("objective.k",),
        "objective.name",
        lambda name: takes(name, "k"),
        "iwae, renyi, cubo and rws (and the vimco/dreg estimators)",
        "use num_samples",
    ),
    (
        ("objective.num_samples",),
        "objective.name",
        lambda name: takes(name, "num_samples"),
        "the elbo objective",
        "use k",
    ),
    (
        ("objective.analytic_kl",),
        "objective.name",
        lambda name: takes(name, "analytic_kl"),
        "the elbo objective with the reparam estimator",
        "",
    ),
    (
        ("objective.analytic_kl",),
        "objective.estimator",
        lambda e: e == "reparam",
        "the elbo objective with the reparam estimator",
        "",
    ),
    (("objective.alpha",), "objective.name", lambda name: takes(name, "alpha"), "the renyi objective", ""),
    (
        ("inference.refine_steps", "inference.refine_lr", "inference.refine_backprop"),
        "inference.strategy",
        lambda s: s == "semi-amortized",
        "the semi-amortized strategy",
        "",
    ),
    (("inference.iterations",), "inference.strategy", lambda s: s == "iterative", "the iterative strategy", ""),
    (
        ("inference.local_lr", "inference.infer_steps", "inference.infer_block", "inference.validation_steps"),
        "inference.strategy",
        lambda s: s == "per-datapoint",
        "the per-datapoint strategy",
        "",
    ),
    (("train.compile",), "inference.strategy", lambda s: s == "amortized", "the amortized strategy", ""),
    (
        ("train.lr_patience", "train.lr_tolerance", "train.lr_reductions"),
        "train.lr_schedule",
        lambda s: s == "plateau",
        "the plateau schedule (lr_schedule = 'plateau')",
        "",
    ),
    (
        ("inference.encoder_hidden",),
        "inference.strategy",
        lambda s: s != "per-datapoint",
        "an encoder (the amortized, semi-amortized and iterative strategies)",
        "",
    ),
    (
        ("inference.transform",),
        "inference.consistency",
        lambda w: w > 0,
        "consistency regularisation (consistency > 0)",
        "",
    ),
    (
        ("inference.flow_length", "inference.flow_centred"),
        "inference.family",
        lambda f: f in ("planar", "radial", "sylvester"),
        "the planar, radial and sylvester families",
        "iaf and nsf take flow_transforms",
    ),
    (
        ("inference.sylvester_variant", "inference.householder_reflections"),
        "inference.family",
        lambda f: f == "sylvester",
        "the sylvester family",
        "",
    ),
    (
        ("data.validation_fraction",),
        "data.binarize",
        lambda b: b != "static-mnist",
        "a split of the training data",
        "static-mnist has its own validation split",
    ),
    (
        ("data.standardize",),
        "data.binarize",
        lambda b: b == "none",
        "data that are not binarised (data.binarize = 'none')",
        "a Bernoulli likelihood needs data in [0, 1]; use --likelihood gaussian",
    ),
    (("data.mean", "data.sd"), "data.standardize", lambda on: on, "standardised data (standardize = true)", ""),
    (("model.num_classes",), "model.name", lambda name: name == "discrete-vae", "the discrete-vae model", ""),
    (("model.layers", "model.layer_hidden"), "model.name", lambda name: name == "hvae", "the hvae model", ""),
    (
        ("model.prior_components",),
        "model.prior",
        lambda prior: prior != "normal",
        "a learned prior (model.prior = 'vamp' or 'mog')",
        "",
    ),
    (("model.args",), "model.name", is_import_path, "a user's model (model.name = 'file.py:Class')", ""),
    (
        ("model.hidden", "model.activation", "model.likelihood", "model.decoder", "model.network"),
        "model.name",
        lambda name: not is_import_path(name),
        "the built-in models",
        "give a user's model its settings in [model.args]",
    ),
    (
        ("inference.encoder_args",),
        "inference.encoder",
        lambda e: e is not None,
        "a user's encoder (inference.encoder)",
        "",
    ),
    (
        ("inference.encoder",),
        "inference.strategy",
        lambda s: s in ("amortized", "semi-amortized"),
        "an encoder of x (the amortized and semi-amortized strategies)",
        "",
    ),
    (
        ("remedies.kl_warmup_start", "remedies.kl_start_weight"),
        "remedies.kl_warmup",
        lambda n: n > 0,
        "a KL warm-up (kl_warmup > 0)",
        "",
    ),
    (("remedies.kl_cycle_ratio",), "remedies.kl_cycles", lambda n: n > 0, "cyclical KL annealing (kl_cycles > 0)", ""),
    (("remedies.temper_start",), "remedies.temper", lambda n: n > 0, "tempering (temper > 0)", ""),
    (("tracking.mlflow_uri",), "tracking.mlflow", lambda on: on, "MLflow tracking (mlflow = true)", ""),
)


def kl_schedule(config: Config) -> KLSchedule:
    """The KL weight schedule of ``config.remedies`` over the run's ``train.epochs``."""
    r = config.remedies
    return KLSchedule(
        beta=r.beta,
        warmup_start=r.kl_warmup_start,
        warmup_end=r.kl_warmup,
        start_weight=r.kl_start_weight,
        cycles=r.kl_cycles,
        cycle_ratio=r.kl_cycle_ratio,
        epochs=config.train.epochs,
    )


def temper_schedule(config: Config) -> KLSchedule:
    """The inverse temperature's schedule of ``remedies.temper``: from ``temper_start`` to 1,
    linear over the first ``temper`` epochs, each epoch's value at its midpoint."""
    r = config.remedies
    return KLSchedule(warmup_end=r.temper, start_weight=r.temper_start)


def epoch_inverse_temperature(config: Config, epoch: int) -> float:
    """The inverse temperature of epoch ``epoch`` (1-based) under ``remedies.temper``, else 1."""
    return temper_schedule(config).epoch_weight(epoch) if config.remedies.temper > 0 else 1.0


def weights_kl(config: Config) -> bool:
    """Whether a remedy weights or clamps the ELBO's KL term (beta, warm-up, cycles, free bits)."""
    r = config.remedies
    return r.beta != 1 or r.kl_warmup > 0 or r.kl_cycles > 0 or r.free_bits > 0


def check_collapse_options(config: Config) -> None:
    """Raise :class:`ConfigError` for remedies (or a MADE decoder) the rest of ``config`` rules out."""
    schedule = kl_schedule(config)
    if weights_kl(config):  # the weighted ELBO checks that its base is the reparameterised ELBO
        WeightedKL(config.objective.value(), weight=schedule.beta, free_bits=config.remedies.free_bits)
    r = config.remedies
    if r.temper > 0:
        if weights_kl(config):
            raise ConfigError(
                "remedies.temper anneals log p(x, z) and replaces the KL weighting: "
                "it does not combine with beta, kl_warmup, kl_cycles or free_bits"
            )
        if r.temper > config.train.epochs:
            raise ConfigError(f"remedies.temper ends at epoch {r.temper}, after the run's {config.train.epochs} epochs")
        Tempered(config.objective.value())  # checks that the objective is the reparameterised ELBO
    if config.remedies.free_bits > 0 and config.inference.family != "mean-field":
        raise ConfigError(f"free bits per dimension need the mean-field family, not {config.inference.family!r}")
    if config.remedies.aggressive and config.inference.strategy == "per-datapoint":
        raise ConfigError("aggressive training needs an inference network; the per-datapoint strategy has none")
    m = config.model
    if m.decoder == "made" and (m.name != "vae" or m.likelihood != "bernoulli"):
        raise ConfigError(f"the MADE decoder is for a VAE with a Bernoulli likelihood, not {m.name} / {m.likelihood}")


def epoch_kl_weight(config: Config, epoch: int) -> float:
    """The KL weight of epoch ``epoch`` (1-based): the schedule's where a remedy weights the KL
    (:func:`weights_kl`), else 1."""
    return kl_schedule(config).epoch_weight(epoch) if weights_kl(config) else 1.0


def _setting(config: Config, name: str) -> Any:
    section, field = name.split(".")
    return getattr(getattr(config, section), field)


#: Named settings, section by section; what a user sets wins (:func:`resolve_config`).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The 784-400-20 MLP VAE of Kingma and Welling (2014) as in the PyTorch examples.
    "kingma-welling": {"model": {"latent_dim": 20, "hidden": [400], "activation": "relu"}},
    # Burda, Grosse and Salakhutdinov (2016), one stochastic layer: 784-200-200-50, tanh.
    "burda-1l": {"model": {"latent_dim": 50, "hidden": [200, 200], "activation": "tanh"}},
    # Their two stochastic layers: 784-200-200-z_1 (100)-100-100-z_2 (50), tanh, as in the
    # authors' code (yburda/iwae, experiments.py: hidden_units_q [[200, 200], [100, 100]]).
    "burda-2l": {
        "model": {"name": "hvae", "layers": [100, 50], "hidden": [200, 200], "layer_hidden": [100, 100],
                  "activation": "tanh"},
    },
}  # fmt: skip
#: A convolutional VAE for MNIST: two stride-2 convolutions (32 and 64 channels) and 256 units
#: in the encoder, mirrored by transposed convolutions in the decoder, 32 latent dimensions.
PRESETS["mnist-conv"] = {"model": {"network": "conv", "latent_dim": 32, "hidden": [256], "activation": "relu"}}
#: The same model trained for time: all 60,000 images, batch 250 (a pass costs a third of batch
#: 20's on a CPU thread), the learning rate scaled up and decayed by a cosine after a warm-up,
#: and a KL warm-up that keeps latent units active (benchmarks/time_to_nll.py, docs/results.md).
PRESETS["burda-1l-fast"] = {
    "model": PRESETS["burda-1l"]["model"],
    "data": {"validation_fraction": 0.0},
    "train": {"epochs": 1500, "batch_size": 250, "lr": 3e-3, "lr_schedule": "cosine", "lr_warmup": 5,
              "adam_eps": 1e-4},
    "remedies": {"kl_warmup": 100},
}  # fmt: skip
#: Its IWAE (k = 5) counterpart: the bound has no KL term to warm up.
PRESETS["burda-1l-fast-iwae5"] = {
    **{section: PRESETS["burda-1l-fast"][section] for section in ("model", "data", "train")},
    "objective": {"name": "iwae", "k": 5},
}
#: The IWAE recipe in bfloat16 where the CPU has it (fp32 elsewhere, said in one line), over
#: 2,500 passes: on an AMX host a bf16 pass costs half an fp32 one (3.9 against 7.6 CPU s,
#: measured 2026-12-07), so the longer schedule, which the 1,500-pass run's still-falling bound
#: asks for, fits in under a third of the paper's-settings time there (benchmarks/time_to_nll.py).
PRESETS["burda-1l-fast-iwae5-bf16"] = {
    **PRESETS["burda-1l-fast-iwae5"],
    "train": {**PRESETS["burda-1l-fast"]["train"], "epochs": 2500, "precision": "bf16"},
}
#: The fast recipe on the two-stochastic-layer model (burda-2l), unchanged from the one-layer
#: model's: batch 250, the cosine decay after a warm-up, the KL warm-up for the VAE
#: (benchmarks/reproduce_burda.py --layers 2).
PRESETS["burda-2l-fast"] = {**PRESETS["burda-1l-fast"], "model": PRESETS["burda-2l"]["model"]}
#: Its IWAE (k = 5) counterpart, at a third of the peak learning rate: at 3e-3 its IWAE bound
#: worsened from pass 50 on (-105.6 to -108.0 by pass 328) while q(z_1 | x) and p(z_1 | z_2)
#: drifted together to scales near 10 (the VAE's stayed below 1); from that pass-328 checkpoint
#: two passes at 1e-3 gained 2.0 nats where three at 3e-3 lost 0.4 (docs/results.md).
PRESETS["burda-2l-fast-iwae5"] = {
    **PRESETS["burda-1l-fast-iwae5"],
    "model": PRESETS["burda-2l"]["model"],
    "train": {**PRESETS["burda-1l-fast"]["train"], "lr": 1e-3},
}


def _with_preset(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over the settings of its ``model.preset`` (what ``values`` sets wins)."""
    model = values.get("model")
    if not isinstance(model, dict) or model.get("preset") is None:
        return values
    preset = model["preset"]
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    architecture = PRESETS[preset]["model"].get("name", "vae")
    if model.get("name", architecture) != architecture:
        raise ConfigError(
            f"preset {preset!r} is an architecture of model {architecture!r}; "
            f"it does not apply to model {model['name']!r}"
        )
    return merge_tables(PRESETS[preset], values)


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        if first["loc"][0] == "remedies" and len(first["loc"]) == 2:
            return f"unknown remedy {first['loc'][1]!r}; choose from {sorted(RemediesConfig.model_fields)}"
        return f"unknown config key {where!r}"
    if first["type"] == "literal_error":
        return f"invalid value {first['input']!r} for {where}: {first['msg'].lower()}"
    message = first["msg"].removeprefix("Value error, ")
    if where == "config":
        return message
    return f"invalid value for {where}: {message}" + ("" if first["type"] == "value_error" else _got(first["input"]))


def _got(value: Any) -> str:
    """``, got VALUE`` for a scalar value as TOML writes it (``true``, ``inf``), else nothing."""
    if isinstance(value, bool):
        return f", got {str(value).lower()}"
    if isinstance(value, float) and not math.isfinite(value):
        return f", got {value}"
    if isinstance(value, int | float | str) and len(repr(value)) <= 40:
        return f", got {value!r}"
    return ""


def resolve_config(values: dict[str, Any], *, explicit: bool = False) -> Config:
    """Validate nested ``values`` over the settings of their preset (:data:`PRESETS`).

    ``explicit``: ``values`` holds the settings a user chose (a TOML file and flags, as in
    :func:`load_config`), so that one that does not apply to the rest is an error. Without it
    ``values`` may set every field, as a run's config.json does (:func:`avi.runs.rundir.read_config`).
    """
    try:
        config = Config.model_validate(_with_preset(values), context={"stored": not explicit})
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None
    return config


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read a TOML config (or start from defaults), apply ``overrides`` section by section, resolve."""
    values = {} if path is None else _read_toml(Path(path))
    for section, entries in (overrides or {}).items():
        current = values.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"config key {section!r} must be a table")
        values[section] = merge_tables(current, {k: v for k, v in entries.items() if v is not None})
    return resolve_config(values, explicit=True)


def _read_toml(path: Path) -> dict[str, Any]:
    """The tables of the TOML file ``path``; :class:`ConfigError` where it is not a readable TOML
    file (a name too long to look up included)."""
    try:
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory; give a TOML file")
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"config file {path} is not a regular file")
        return tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or first_line(err)}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot parse config file {path}: {first_line(err)}") from None


def merge_tables(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra`` key by key, tables merged recursively (``extra`` wins): an
    override of ``model.args.hidden`` keeps the file's other ``[model.args]``."""
    result = dict(base)
    for key, value in extra.items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            result[key] = merge_tables(current, value)
        else:
            result[key] = value
    return result


def learning_rate(train: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based) under ``train.lr_schedule`` and ``train.lr_warmup``
    (the plateau schedule's before any plateau)."""
    if epoch <= train.lr_warmup:
        return train.lr * epoch / train.lr_warmup
    if train.lr_schedule == "cosine":
        span = max(train.epochs - train.lr_warmup, 1)
        return train.lr * (1 + math.cos(math.pi * (epoch - 1 - train.lr_warmup) / span)) / 2
    if train.lr_schedule in ("constant", "plateau"):  # the plateaus' halvings: avi.runs.hooks.LearningRate
        return train.lr
    stage, end = 0, 1
    while epoch > end and stage < 7:
        stage += 1
        end += 3**stage
    return train.lr * 10 ** (-stage / 7)
