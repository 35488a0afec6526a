"""Burda et al.'s learning-rate schedule: its stages, and that every network's optimiser follows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avi.runs.config import TrainConfig, learning_rate, load_config
from avi.runs.rundir import CHECKPOINT
from avi.runs.train import run_fit

#: the last epoch of stage i = 0..7 (stage i lasts 3^i epochs)
STAGE_ENDS = [1, 4, 13, 40, 121, 364, 1093, 3280]


def test_burda_stages_last_3_to_the_i_epochs_at_lr_times_10_to_the_minus_i_over_7() -> None:
    train = TrainConfig(lr=1e-3, lr_schedule="burda")
    for i, end in enumerate(STAGE_ENDS):
        start = 1 if i == 0 else STAGE_ENDS[i - 1] + 1
        for epoch in (start, end):
            assert learning_rate(train, epoch) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-12), epoch
    assert learning_rate(train, 5000) == pytest.approx(1e-4, rel=1e-12)  # past the schedule: its last rate
    assert learning_rate(TrainConfig(lr=0.01), 77) == 0.01


def test_nvil_baseline_follows_the_schedule_with_the_networks(small_config, tmp_path: Path) -> None:
    config = load_config(small_config(2), {"train": {"lr_schedule": "burda"}, "objective": {"estimator": "nvil"}})
    run = run_fit(config, tmp_path / "run")
    state = torch.load(run / CHECKPOINT, weights_only=False)
    assert len(state["optimizers"]) == 2  # model and encoder; NVIL's baseline network
    for optimizer in state["optimizers"]:
        for group in optimizer["param_groups"]:
            assert group["lr"] == pytest.approx(config.train.lr * 10 ** (-1 / 7), rel=1e-12)  # epoch 2: stage 1
