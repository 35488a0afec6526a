"""Config checks that keep a run from silently ignoring what the user asked for: settings given
where they do not apply, layer sizes that are not positive, and data too small for a test split.
Each is one line (exit code 2 through the CLI); the combinations where a setting applies, and a
run's stored config.json (which sets every field), still validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from avi.errors import ConfigError, DataError
from avi.runs.build import load_splits
from avi.runs.config import Config, load_config, resolve_config
from tests.runs.conftest import small_job

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
    ({"objective": {"name": "cubo", "alpha": 0.2}}, "objective.alpha applies to the renyi objective, not objective.name = 'cubo'"),
    ({"objective": {"name": "iwae", "analytic_kl": False}}, "objective.analytic_kl applies to the elbo objective with the reparam estimator, not objective.name = 'iwae'"),
    ({"objective": {"estimator": "stl", "analytic_kl": False}}, "objective.analytic_kl applies to the elbo objective with the reparam estimator, not objective.estimator = 'stl'"),
    ({"inference": {"refine_steps": 3}}, "inference.refine_steps applies to the semi-amortized strategy, not inference.strategy = 'amortized'"),
    ({"inference": {"strategy": "iterative", "refine_lr": 0.1}}, "inference.refine_lr applies to the semi-amortized strategy, not inference.strategy = 'iterative'"),
    ({"inference": {"strategy": "per-datapoint", "refine_backprop": False}}, "inference.refine_backprop applies to the semi-amortized strategy"),
    ({"inference": {"strategy": "semi-amortized", "iterations": 3}}, "inference.iterations applies to the iterative strategy, not inference.strategy = 'semi-amortized'"),
    ({"inference": {"local_lr": 0.5}}, "inference.local_lr applies to the per-datapoint strategy, not inference.strategy = 'amortized'"),
    ({"inference": {"strategy": "semi-amortized", "infer_steps": 10}}, "inference.infer_steps applies to the per-datapoint strategy"),
    ({"inference": {"infer_block": 10}}, "inference.infer_block applies to the per-datapoint strategy"),
    ({"inference": {"strategy": "iterative", "validation_steps": 10}}, "inference.validation_steps applies to the per-datapoint strategy"),
    ({"inference": {"strategy": "per-datapoint", "encoder_hidden": [8]}}, "inference.encoder_hidden applies to an encoder (the amortized, semi-amortized and iterative strategies), not inference.strategy = 'per-datapoint'"),
    ({"inference": {"transform": "rotate"}}, "inference.transform applies to consistency regularisation (consistency > 0), not inference.consistency = 0.0"),
    ({"inference": {"consistency": 0.0, "transform": "rotate"}}, "inference.transform applies to consistency regularisation"),
    ({"model": {"num_classes": 4}}, "model.num_classes applies to the discrete-vae model, not model.name = 'vae'"),
    ({"model": {"name": "sbn", "num_classes": 4}}, "model.num_classes applies to the discrete-vae model, not model.name = 'sbn'"),
    ({"remedies": {"kl_start_weight": 0.1}}, "remedies.kl_start_weight applies to a KL warm-up (kl_warmup > 0), not remedies.kl_warmup = 0"),
    ({"remedies": {"kl_warmup_start": 1}}, "remedies.kl_warmup_start applies to a KL warm-up"),
    ({"remedies": {"kl_cycle_ratio": 0.3}}, "remedies.kl_cycle_ratio applies to cyclical KL annealing (kl_cycles > 0), not remedies.kl_cycles = 0"),
    ({"tracking": {"mlflow_uri": "sqlite:///x.db"}}, "tracking.mlflow_uri applies to MLflow tracking (mlflow = true), not tracking.mlflow = False"),
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
    {"inference": {"strategy": "per-datapoint", "local_lr": 0.5, "infer_steps": 10, "infer_block": 10, "validation_steps": 5}},
    {"inference": {"encoder_hidden": [8, 4]}},
    {"inference": {"consistency": 0.5, "transform": "rotate"}},
    # flow sizes also shape the encoder that avi gaps --family iaf|nsf trains for any run
    {"inference": {"flow_hidden": [8]}},
    {"inference": {"family": "iaf", "flow_transforms": 3, "flow_hidden": [8]}},
    {"model": {"name": "discrete-vae", "num_classes": 4}},
    {"model": {"name": "sbn", "hidden": []}},
    {"remedies": {"kl_warmup": 4, "kl_warmup_start": 1, "kl_start_weight": 0.1}},
    {"remedies": {"kl_cycles": 2, "kl_cycle_ratio": 0.3}},
    {"tracking": {"mlflow": True, "mlflow_uri": "sqlite:///x.db"}},
]  # fmt: skip


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


def test_bad_settings_through_the_cli_are_one_line_with_exit_code_2(run_avi, tmp_path: Path) -> None:
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
        result = run_avi("fit", *args, "--out", str(tmp_path / "run"))
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
    with pytest.raises(DataError, match=r"^4 data points are too few for test_fraction 0.1 \(validation_fraction 0.1\): "
                       r"the test split would be empty; use more points or a larger data.test_fraction$"):  # fmt: skip
        load_splits(_file_config(tmp_path, 4))


@pytest.mark.parametrize(("rows", "data", "sizes"), [
    (4, {"test_fraction": 0.25, "validation_fraction": 0.0}, (3, 0, 1)),  # no validation split: legal
    (20, {"validation_fraction": 0.0}, (18, 0, 2)),
    (20, {}, (16, 2, 2)),
])  # fmt: skip
def test_small_data_with_a_test_point_splits(tmp_path: Path, rows: int, data: dict[str, float], sizes: tuple[int, ...]) -> None:
    splits = load_splits(_file_config(tmp_path, rows, **data))
    assert tuple(len(split) for split in splits) == sizes
