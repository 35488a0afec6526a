"""Config checks that keep a run from silently ignoring what the user asked for: settings given
where they do not apply, layer sizes that are not positive, data too small for a test split,
values that are not strictly of their type (a bool for a number), not finite or out of range,
unknown devices, and sizes too large to allocate. Each is one line (exit code 2 through the
CLI); the combinations where a setting applies, and a run's stored config.json (which sets
every field), still validate."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from avi.cli import app
from avi.errors import ConfigError, DataError
from avi.runs.build import build_model, load_splits
from avi.runs.config import MAX_SEED, MAX_THREADS, Config, load_config, resolve_config
from avi.runs.load import resolve_device
from avi.runs.memory import EVALUATION_SIZES, MODEL_SIZES, TRAINING_SIZES, settings_of, sized_by
from tests.runs.conftest import small_job

FIXTURES = Path(__file__).parent.parent / "fixtures"

REJECTED = [
    (
        {"objective": {"k": 50}},
        (
            "objective.k applies to iwae, renyi, cubo and rws (and the vimco/dreg estimators), "
            "not objective.name = 'elbo': use num_samples"
        ),
    ),
    (
        {"objective": {"name": "iwae", "num_samples": 4}},
        "objective.num_samples applies to the elbo objective, not objective.name = 'iwae': use k",
    ),
    ({"objective": {"alpha": 0.2}}, "objective.alpha applies to the renyi objective, not objective.name = 'elbo'"),
    (
        {"objective": {"name": "cubo", "alpha": 0.2}},
        "objective.alpha applies to the renyi objective, not objective.name = 'cubo'",
    ),
    (
        {"objective": {"name": "iwae", "analytic_kl": False}},
        "objective.analytic_kl applies to the elbo objective with the reparam estimator, not objective.name = 'iwae'",
    ),
    (
        {"objective": {"estimator": "stl", "analytic_kl": False}},
        "objective.analytic_kl applies to the elbo objective with the reparam estimator, not "
        "objective.estimator = 'stl'",
    ),
    (
        {"inference": {"refine_steps": 3}},
        "inference.refine_steps applies to the semi-amortized strategy, not inference.strategy = 'amortized'",
    ),
    (
        {"inference": {"strategy": "iterative", "refine_lr": 0.1}},
        "inference.refine_lr applies to the semi-amortized strategy, not inference.strategy = 'iterative'",
    ),
    (
        {"inference": {"strategy": "per-datapoint", "refine_backprop": False}},
        "inference.refine_backprop applies to the semi-amortized strategy",
    ),
    (
        {"inference": {"strategy": "semi-amortized", "iterations": 3}},
        "inference.iterations applies to the iterative strategy, not inference.strategy = 'semi-amortized'",
    ),
    (
        {"inference": {"local_lr": 0.5}},
        "inference.local_lr applies to the per-datapoint strategy, not inference.strategy = 'amortized'",
    ),
    (
        {"inference": {"strategy": "semi-amortized", "infer_steps": 10}},
        "inference.infer_steps applies to the per-datapoint strategy",
    ),
    ({"inference": {"infer_block": 10}}, "inference.infer_block applies to the per-datapoint strategy"),
    (
        {"inference": {"strategy": "iterative", "validation_steps": 10}},
        "inference.validation_steps applies to the per-datapoint strategy",
    ),
    (
        {"inference": {"strategy": "per-datapoint", "encoder_hidden": [8]}},
        "inference.encoder_hidden applies to an encoder (the amortized, semi-amortized and iterative "
        "strategies), not inference.strategy = 'per-datapoint'",
    ),
    (
        {"inference": {"transform": "rotate"}},
        "inference.transform applies to consistency regularisation (consistency > 0), not inference.consistency = 0.0",
    ),
    (
        {"inference": {"consistency": 0.0, "transform": "rotate"}},
        "inference.transform applies to consistency regularisation",
    ),
    ({"model": {"num_classes": 4}}, "model.num_classes applies to the discrete-vae model, not model.name = 'vae'"),
    (
        {"model": {"name": "sbn", "num_classes": 4}},
        "model.num_classes applies to the discrete-vae model, not model.name = 'sbn'",
    ),
    (
        {"remedies": {"kl_start_weight": 0.1}},
        "remedies.kl_start_weight applies to a KL warm-up (kl_warmup > 0), not remedies.kl_warmup = 0",
    ),
    ({"remedies": {"kl_warmup_start": 1}}, "remedies.kl_warmup_start applies to a KL warm-up"),
    (
        {"remedies": {"kl_cycle_ratio": 0.3}},
        "remedies.kl_cycle_ratio applies to cyclical KL annealing (kl_cycles > 0), not remedies.kl_cycles = 0",
    ),
    (
        {"tracking": {"mlflow_uri": "sqlite:///x.db"}},
        "tracking.mlflow_uri applies to MLflow tracking (mlflow = true), not tracking.mlflow = False",
    ),
    (
        {"remedies": {"temper_start": 0.1}},
        "remedies.temper_start applies to tempering (temper > 0), not remedies.temper = 0",
    ),
]  # fmt: skip

ACCEPTED = [
    {"objective": {"name": name, "k": 3}} for name in ("iwae", "renyi", "cubo", "rws")
] + [
    {"objective": {"name": "iwae", "k": 3, "estimator": "vimco"}},
    {"objective": {"name": "iwae", "k": 3, "estimator": "dreg"}},
    {"objective": {"num_samples": 4, "analytic_kl": False}},
    {"objective": {"num_samples": 4, "estimator": "stl"}},
    {"objective": {"name": "renyi", "alpha": 0.2, "k": 3}},
    # the order of the CUBO that avi evaluate --cubo estimates, whatever the objective trained
    {"objective": {"cubo_order": 3.0}},
    {"objective": {"name": "cubo", "cubo_order": 3.0}},
    {"inference": {"strategy": "semi-amortized", "refine_steps": 3, "refine_lr": 0.01, "refine_backprop": False}},
    {"inference": {"strategy": "iterative", "iterations": 3, "encoder_hidden": [8]}},
    {"inference": {"strategy": "per-datapoint", "local_lr": 0.5, "infer_steps": 10, "infer_block": 10,
                   "validation_steps": 5}},
    {"inference": {"encoder_hidden": [8, 4]}},
    {"inference": {"consistency": 0.5, "transform": "rotate"}},
    # flow sizes also shape the encoder that avi gaps --family iaf|nsf trains for any run
    {"inference": {"flow_hidden": [8]}},
    {"inference": {"family": "iaf", "flow_transforms": 3, "flow_hidden": [8]}},
    {"model": {"name": "discrete-vae", "num_classes": 4}},
    {"model": {"name": "sbn", "hidden": []}},
    {"remedies": {"kl_warmup": 4, "kl_warmup_start": 1, "kl_start_weight": 0.1}},
    {"remedies": {"kl_cycles": 2, "kl_cycle_ratio": 0.3}},
    {"remedies": {"temper": 2, "temper_start": 0.1}},
    {"tracking": {"mlflow": True, "mlflow_uri": "sqlite:///x.db"}},
]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"remedies": {"temper": 2, "kl_warmup": 2}}, "remedies.temper anneals log p(x, z) and replaces the KL weight"),
        (
            {"remedies": {"temper": 2, "free_bits": 0.1}},
            "it does not combine with beta, kl_warmup, kl_cycles or free_bits",
        ),
        ({"remedies": {"temper": 20}, "train": {"epochs": 10}}, "remedies.temper ends at epoch 20, after the run's 10"),
        ({"remedies": {"temper": 2}, "objective": {"name": "iwae", "k": 3}}, "anneals the ELBO, not objective 'iwae'"),
    ],
)
def test_tempering_where_it_cannot_apply_is_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, values)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("values", "message"), REJECTED)
def test_a_setting_that_does_not_apply_is_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, values)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValidationError, match="applies to"):
        Config.model_validate(values)


@pytest.mark.parametrize("values", ACCEPTED)
def test_a_setting_where_it_applies_validates(values: dict[str, Any]) -> None:
    config = load_config(None, values)
    for section, fields in values.items():
        for field, value in fields.items():
            assert getattr(getattr(config, section), field) == value
    Config.model_validate(values)


def test_settings_left_at_their_defaults_are_not_checked() -> None:
    # k, alpha, refine_steps, num_classes, transform ... all hold values that elbo, amortized
    # and vae do not read; unset, they are no error
    assert load_config(None) == Config()


def test_a_stored_config_sets_every_field_and_reads_back() -> None:
    """A run's config.json is ``model_dump()``: every field set, k with elbo included."""
    stored = load_config(None, {"objective": {"name": "renyi", "alpha": 0.2}}).model_dump()
    assert resolve_config(stored).objective.alpha == 0.2
    assert Config.model_validate(stored, context={"stored": True}).objective.k == 5
    with pytest.raises(ValidationError, match="objective.num_samples applies to the elbo objective"):
        Config.model_validate(stored)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"model": {"hidden": [16, 0]}}, "model.hidden.1"),
        ({"inference": {"encoder_hidden": [-3]}}, "inference.encoder_hidden.0"),
        ({"inference": {"family": "iaf", "flow_hidden": [-1]}}, "inference.flow_hidden.0"),
    ],
)
def test_layer_sizes_must_be_positive(values: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid value for {where}: Input should be greater than 0"):
        load_config(None, values)


def test_bad_settings_through_the_cli_are_one_line_with_exit_code_2(avi_cli, tmp_path: Path) -> None:
    config = tmp_path / "small.toml"
    config.write_text(small_job(1))
    flow = tmp_path / "flow.toml"
    flow.write_text(small_job(1) + '[inference]\nfamily = "iaf"\nflow_hidden = [-1]\n')
    tiny = tmp_path / "tiny.npy"
    np.save(tiny, np.random.default_rng(0).integers(0, 2, (4, 12)).astype(float))
    cases = [
        ([str(config), "--k", "50"], "objective.k applies to iwae, renyi, cubo and rws"),
        ([str(config), "--refine-steps", "3"], "inference.refine_steps applies to the semi-amortized strategy"),
        ([str(flow)], "invalid value for inference.flow_hidden.0: Input should be greater than 0"),
        ([str(config), "--data", str(tiny)], "4 data points are too few for test_fraction 0.1"),
    ]
    for args, message in cases:
        result = avi_cli("fit", *args, "--out", str(tmp_path / "run"))
        assert result.returncode == 2, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
        assert not (tmp_path / "run").exists()


def _file_config(tmp_path: Path, rows: int, **data: float) -> Config:
    path = tmp_path / f"data-{rows}.npy"
    np.save(path, np.random.default_rng(0).integers(0, 2, (rows, 6)).astype(float))
    return load_config(None, {"data": {"source": str(path), **data}})


def test_data_too_small_for_a_test_split_is_a_data_error(tmp_path: Path) -> None:
    # round(4 x 0.1) = 0 test points: avi evaluate would have nothing to score
    message = (r"^4 data points are too few for test_fraction 0.1 \(validation_fraction 0.1\): "
               r"the test split would be empty; use more points or a larger data.test_fraction$")  # fmt: skip
    with pytest.raises(DataError, match=message):
        load_splits(_file_config(tmp_path, 4))


@pytest.mark.parametrize(("rows", "data", "sizes"), [
    (4, {"test_fraction": 0.25, "validation_fraction": 0.0}, (3, 0, 1)),  # no validation split: legal
    (20, {"validation_fraction": 0.0}, (18, 0, 2)),
    (20, {}, (16, 2, 2)),
])  # fmt: skip
def test_small_data_with_a_test_point_splits(
    tmp_path: Path, rows: int, data: dict[str, float], sizes: tuple[int, ...]
) -> None:
    splits = load_splits(_file_config(tmp_path, rows, **data))
    assert tuple(len(split) for split in splits) == sizes


# Strict values: a bool is not a number, every float is finite, ranges mean something.


def _fields(*kinds: type) -> list[str]:
    """Every config key ``section.field`` whose value (or list item) is of one of ``kinds``."""
    keys = []
    for section, info in Config.model_fields.items():
        for field, spec in info.annotation.model_fields.items():  # type: ignore[union-attr]
            types = {spec.annotation, *get_args(spec.annotation)}
            items = [item for t in types if get_origin(t) is list for item in get_args(t)]  # list[Width]
            types |= {get_args(item)[0] if get_origin(item) is Annotated else item for item in items}
            if types & set(kinds):
                keys.append(f"{section}.{field}")
    return keys


def _nested(key: str, value: Any) -> dict[str, dict[str, Any]]:
    section, field = key.split(".")
    annotation = Config.model_fields[section].annotation.model_fields[field].annotation  # type: ignore[union-attr]
    listed = any(get_origin(t) is list for t in (annotation, *get_args(annotation)))
    return {section: {field: [value] if listed else value}}


FLOATS = _fields(float)
INTS = _fields(int)
BOOLS = _fields(bool)


def test_the_field_lists_cover_the_settings_named_in_the_audit() -> None:
    assert {"train.lr", "inference.local_lr", "inference.refine_lr", "remedies.beta", "remedies.free_bits",
            "train.adam_eps", "evaluate.memory_budget"} <= set(FLOATS)  # fmt: skip
    assert {"train.batch_size", "train.seed", "train.threads", "model.hidden", "objective.k"} <= set(INTS)
    assert "train.compile" in BOOLS and not set(FLOATS) & set(INTS)


@pytest.mark.parametrize("key", FLOATS + INTS)
def test_a_bool_is_not_a_number(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, _nested(key, True))
    kind = "number" if key in FLOATS else "integer"
    assert f"invalid value for {key}" in str(err.value) and f"should be a valid {kind}, got true" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key", BOOLS)
def test_a_number_or_text_is_not_a_bool(key: str) -> None:
    for value in (1, "yes"):
        with pytest.raises(ConfigError, match=f"invalid value for {key}: Input should be a valid boolean"):
            load_config(None, _nested(key, value))


@pytest.mark.parametrize("key", FLOATS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_is_finite(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"^invalid value for {key}(.0)?: Input should be a finite number, got "):
        load_config(None, _nested(key, value))


@pytest.mark.parametrize("key", INTS)
def test_an_int_is_not_a_float_or_text(key: str) -> None:
    for value in (2.0, "2"):
        with pytest.raises(ConfigError, match=f"invalid value for {key}(.0)?: Input should be a valid integer"):
            load_config(None, _nested(key, value))


def test_an_int_stands_for_a_float() -> None:
    config = load_config(None, {"train": {"lr": 1, "adam_eps": 1}, "remedies": {"beta": 2}})
    assert config.train.lr == 1.0 and type(config.train.lr) is float and config.remedies.beta == 2.0


@pytest.mark.parametrize(("key", "value", "bound"), [
    ("train.seed", 2**63, "less than or equal to 9223372036854775807"),
    ("train.seed", 2**64, "less than or equal to 9223372036854775807"),
    ("train.seed", -1, "greater than or equal to 0"),
    ("data.seed", 2**70, "less than or equal to 9223372036854775807"),
    ("train.threads", 0, "greater than or equal to 1"),
    ("train.threads", 2**62, "less than or equal to 4096"),
    ("train.lr", 0, "greater than 0"),
    ("train.adam_eps", 0.0, "greater than 0"),
    ("inference.local_lr", -0.1, "greater than 0"),
    ("inference.refine_lr", 0.0, "greater than 0"),
    ("remedies.beta", -1.0, "greater than or equal to 0"),
    ("remedies.free_bits", -0.5, "greater than or equal to 0"),
    ("objective.temperature", 0.0, "greater than 0"),
    ("objective.cubo_order", 1.0, "greater than 1"),
    ("evaluate.memory_budget", 0.0, "greater than 0"),
    ("model.latent_dim", 0, "greater than or equal to 1"),
])  # fmt: skip
def test_values_out_of_range_are_one_line(key: str, value: float, bound: str) -> None:
    with pytest.raises(ConfigError, match=f"^invalid value for {key}: Input should be {bound}, got "):
        load_config(None, _nested(key, value))


def test_the_largest_seed_and_its_offsets_fit_torchs_generator() -> None:
    config = load_config(None, {"train": {"seed": MAX_SEED, "threads": MAX_THREADS}, "data": {"seed": MAX_SEED}})
    assert config.train.seed == MAX_SEED == 2**63 - 1 and config.train.threads == 4096
    # the runs seed with train.seed + 1, + 7919 * rank + epoch, data.seed + 2: far below 2^64
    torch.Generator().manual_seed(MAX_SEED + 2**62)
    with pytest.raises((ValueError, RuntimeError)):
        torch.Generator().manual_seed(2**64)


def test_a_toml_file_with_a_bool_or_inf_for_a_number_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    for text, message in (
        (
            "[train]\nbatch_size = true\n",
            "invalid value for train.batch_size: Input should be a valid integer, got true",
        ),
        ("[train]\nadam_eps = inf\n", "invalid value for train.adam_eps: Input should be a finite number, got inf"),
        ("[model]\nhidden = [10, true]\n", "invalid value for model.hidden.1: Input should be a valid integer"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path)


ACCEPTED_DEVICES = ["cpu", "cuda", "cuda:0", "cuda:12", "auto"]
REFUSED_DEVICES = ["meta", "mps", "xpu", "cuda:x", "cpu:0", "CUDA", "cuda:-1", "cuda:01", "cuda:", " cpu", ""]


@pytest.mark.parametrize("device", ACCEPTED_DEVICES)
def test_the_device_forms_validate(device: str) -> None:
    assert load_config(None, {"train": {"device": device}}).train.device == device


@pytest.mark.parametrize("device", REFUSED_DEVICES)
def test_other_devices_are_one_line_listing_the_forms(device: str) -> None:
    forms = re.escape("use cpu, cuda, cuda:N (N a GPU's index) or auto")
    with pytest.raises(ConfigError, match=f"^invalid value for train.device: unknown device '{device}'; {forms}$"):
        load_config(None, {"train": {"device": device}})
    with pytest.raises(ConfigError, match=f"^unknown device '{device}'; {forms}$"):  # avi evaluate --device
        resolve_device(device)


def test_a_gpu_this_machine_lacks_is_one_line() -> None:
    # past torch's 8-bit device index too (cuda:200 would wrap around to cuda:-56)
    for name in ("cuda:200", "cuda:99999999999999999999"):
        with pytest.raises(ConfigError, match=f"device '{name}' requested but (no CUDA GPU|this machine has)"):
            resolve_device(name)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_config_path_that_is_not_a_file_says_what_it_is(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^config file {re.escape(str(tmp_path))} is a directory; give a TOML file$"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="does not exist$"):
        load_config(tmp_path / "missing.toml")
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file$"):  # reading it would wait forever
        load_config(fifo)


def test_a_stored_config_of_an_old_run_still_validates() -> None:
    stored = json.loads((FIXTURES / "old_run" / "config.json").read_text())
    config = resolve_config(stored)
    assert config.train.adam_eps == 1e-8 and config.objective.k == 3 and config.model.hidden == [16]


# Sizes no config check can bound: an allocation that fails names them (avi.runs.memory).


@pytest.mark.parametrize(("model", "what"), [
    ({"latent_dim": 2**55, "hidden": [400]}, "a tensor size past 64 bits"),  # 400 x 2^55 floats: past 2^64 bytes
    ({"hidden": [2**40]}, "not enough memory (tried to allocate "),  # 35 TB: more than any machine has
])  # fmt: skip
def test_a_model_too_large_to_build_names_its_sizes(model: dict[str, Any], what: str) -> None:
    config = load_config(None, {"model": model})
    with pytest.raises(ConfigError) as err, sized_by(settings_of(config, MODEL_SIZES)):
        build_model(config, 12)
    message = str(err.value)
    assert message.startswith(what) and "\n" not in message
    key, value = next(iter(model.items()))
    assert f"model.{key} = {value!r}" in message and message.endswith("; use smaller sizes")
    assert "num_classes" not in message and "flow_hidden" not in message  # the vae's mean-field q reads neither
    assert "model.activation" not in message  # relu units size nothing


@pytest.mark.parametrize("activation", ["maxout", "gated"])
def test_wide_units_are_named_among_the_sizes(activation: str) -> None:
    # a maxout layer is 4 linear pieces a unit, a gated one 2 (value and gate): its width is
    # hidden times that, so the activation sizes it
    config = load_config(None, {"model": {"hidden": [2**38], "activation": activation}})
    with pytest.raises(ConfigError) as err, sized_by(settings_of(config, MODEL_SIZES)):
        build_model(config, 12)
    message = str(err.value)
    assert f"model.hidden = {[2**38]!r}" in message and f"model.activation = {activation!r}" in message


def test_only_allocation_failures_become_size_errors() -> None:
    with pytest.raises(ValueError, match="^other$"), sized_by({"objective.k": 5}):
        raise ValueError("other")
    with pytest.raises(ConfigError, match="^not enough memory for objective.k = 5; use smaller sizes$"):
        with sized_by({"objective.k": 5}):
            raise MemoryError
    sizes = settings_of(load_config(None, {"objective": {"name": "iwae", "k": 7}}), TRAINING_SIZES + EVALUATION_SIZES)
    assert sizes == {"train.batch_size": 100, "objective.k": 7, "evaluate.k": 5000}


def test_avi_fit_with_a_model_too_large_for_memory_is_one_line(tmp_path: Path) -> None:
    """build_run sizes the model inside sized_by: fit, evaluate, gaps and load_run all get it."""
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((40, 6)))
    args = ["fit", "--data", str(data), "--latent-dim", str(2**40), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not enough memory" in lines[0] and f"model.latent_dim = {2**40}" in lines[0]
