"""The learning-rate schedules (Burda et al.'s stages, cosine with warm-up), that every network's
optimiser follows them, and presets that fill several sections."""

from __future__ import annotations

import math
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


def test_cosine_rises_linearly_over_the_warm_up_then_decays_to_zero_over_the_epochs() -> None:
    train = TrainConfig(lr=2e-3, lr_schedule="cosine", lr_warmup=4, epochs=104)
    assert [learning_rate(train, e) for e in (1, 2, 4)] == pytest.approx([5e-4, 1e-3, 2e-3], rel=1e-12)
    assert learning_rate(train, 5) == pytest.approx(2e-3, rel=1e-12)  # the first epoch after the warm-up
    assert learning_rate(train, 55) == pytest.approx(1e-3, rel=1e-12)  # halfway: (1 + cos(pi / 2)) / 2
    rates = [learning_rate(train, e) for e in range(5, 105)]
    assert all(a > b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert rates[-1] == pytest.approx(2e-3 * (1 + math.cos(math.pi * 99 / 100)) / 2, rel=1e-12)
    assert learning_rate(TrainConfig(lr=0.01, lr_warmup=10), 5) == pytest.approx(0.005)  # warm-up, constant


def test_a_preset_fills_every_section_it_names_and_what_the_user_sets_wins() -> None:
    config = load_config(None, {"model": {"preset": "burda-1l-fast"}, "train": {"epochs": 700}})
    assert (config.model.latent_dim, config.model.hidden, config.model.activation) == (50, [200, 200], "tanh")
    assert (config.train.epochs, config.train.batch_size, config.train.lr_schedule) == (700, 250, "cosine")
    assert (config.remedies.kl_warmup, config.data.validation_fraction) == (100, 0.0)
    iwae = load_config(None, {"model": {"preset": "burda-1l-fast-iwae5"}})
    assert (iwae.objective.name, iwae.objective.k, iwae.remedies.kl_warmup) == ("iwae", 5, 0)
