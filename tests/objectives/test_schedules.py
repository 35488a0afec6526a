"""KL weight schedules: exact values of beta, linear warm-up and cyclical annealing, and their errors."""

from __future__ import annotations

import pytest

from avi.errors import ConfigError
from avi.objectives.schedules import KLSchedule


def test_default_schedule_is_the_plain_elbo() -> None:
    schedule = KLSchedule()
    assert schedule.constant
    assert [schedule(t) for t in (0.0, 0.5, 7.0, 1e6)] == [1.0] * 4


def test_beta_is_a_constant_weight() -> None:
    schedule = KLSchedule(beta=0.2)
    assert schedule.constant
    assert [schedule.epoch_weight(e) for e in (1, 2, 50)] == [0.2] * 3


def test_linear_warm_up_from_zero_takes_each_epochs_midpoint() -> None:
    schedule = KLSchedule(warmup_end=4, epochs=10)
    assert not schedule.constant
    assert [schedule(t) for t in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert [schedule.epoch_weight(e) for e in range(1, 7)] == [0.125, 0.375, 0.625, 0.875, 1.0, 1.0]


def test_warm_up_with_a_start_epoch_and_weight() -> None:
    schedule = KLSchedule(warmup_start=2, warmup_end=4, start_weight=0.1, epochs=4)
    values = [schedule(t) for t in (0, 2, 3, 4, 5)]
    assert values == pytest.approx([0.1, 0.1, 0.55, 1.0, 1.0], abs=1e-12)


def test_cyclical_annealing_follows_fu_et_al() -> None:
    # 2 cycles of 4 epochs; rising linearly from 0 over the first half (R = 0.5), then 1.
    schedule = KLSchedule(cycles=2, epochs=8)
    assert [schedule(t) for t in (0, 1, 2, 3, 4, 5, 6, 7.9)] == pytest.approx([0, 0.5, 1, 1, 0, 0.5, 1, 1])
    assert [schedule.epoch_weight(e) for e in range(1, 9)] == pytest.approx([0.25, 0.75, 1, 1] * 2)
    assert KLSchedule(cycles=1, cycle_ratio=1.0, epochs=4).epoch_weight(2) == pytest.approx(0.375)


def test_remedies_combine_as_a_product() -> None:
    schedule = KLSchedule(beta=0.5, warmup_end=2, cycles=2, epochs=4)
    # t = 1: warm-up 0.5, cycle (period 2) tau = 0.5 -> 1; t = 2.5: warm-up 1, tau = 0.25 -> 0.5.
    assert schedule(1.0) == pytest.approx(0.25)
    assert schedule(2.5) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": -0.1}, "beta must be non-negative"),
        ({"beta": float("nan")}, "beta must be non-negative"),
        ({"warmup_end": 20, "epochs": 10}, "after the run's 10 epochs"),
        ({"warmup_start": 5, "warmup_end": 3, "epochs": 10}, "starts at epoch 5, not before its end"),
        ({"warmup_start": 3, "warmup_end": 3, "epochs": 10}, "starts at epoch 3"),
        ({"start_weight": 1.5, "warmup_end": 2}, "start weight"),
        ({"cycles": 5, "epochs": 3}, "5 KL cycles need at least as many epochs"),
        ({"cycles": 2}, "KL cycles need"),
        ({"cycles": 1, "epochs": 3, "cycle_ratio": 0.0}, "cycle ratio"),
    ],
)
def test_bad_schedules_are_one_line_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        KLSchedule(**kwargs)
    assert "\n" not in str(err.value)
