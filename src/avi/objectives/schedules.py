"""Schedules of the KL weight: beta (Higgins et al. 2017), linear warm-up (Bowman et al. 2016)
and cyclical annealing (Fu et al. 2019), combinable.

A schedule is a frozen value; ``schedule(t)`` is the weight at training time t, measured in
epochs (t = 0 is the start of training, t = 2.5 the middle of the third epoch). Training keeps the
weight of an epoch constant: epoch e (1-based) uses ``schedule.epoch_weight(e) = schedule(e - 1/2)``,
the mean of a linear ramp over that epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from avi.errors import ConfigError

__all__ = ["KLSchedule"]


@dataclass(frozen=True)
class KLSchedule:
    """w(t) = beta * warm-up(t) * cycle(t).

    - warm-up (``warmup_end > 0``): ``start_weight`` until epoch ``warmup_start``, then linear
      to 1 at epoch ``warmup_end``, 1 after;
    - cycles (``cycles > 0``, Fu et al. 2019): the run's ``epochs`` split into ``cycles`` periods
      of length P = epochs / cycles; with tau = (t mod P) / P, cycle(t) = tau / ``cycle_ratio``
      while tau < ``cycle_ratio``, else 1 (their R = 0.5 by default). Beyond ``epochs`` the
      cycles go on.

    Raises :class:`ConfigError` for a negative beta, a warm-up that starts at or after its end
    or ends after the run, or more cycles than epochs.

    Example:
        >>> KLSchedule(warmup_end=4, epochs=10).epoch_weight(1)
        0.125
    """

    beta: float = 1.0
    warmup_start: int = 0
    warmup_end: int = 0
    start_weight: float = 0.0
    cycles: int = 0
    cycle_ratio: float = 0.5
    epochs: int | None = None

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ConfigError(f"beta must be non-negative, got {self.beta}")
        if not 0 <= self.start_weight <= 1:
            raise ConfigError(f"the KL warm-up's start weight must be in [0, 1], got {self.start_weight}")
        if self.warmup_start < 0 or self.warmup_end < 0:
            raise ConfigError(f"KL warm-up epochs must be non-negative, got {self.warmup_start} to {self.warmup_end}")
        if self.warmup_end > 0 and self.warmup_start >= self.warmup_end:
            raise ConfigError(
                f"the KL warm-up starts at epoch {self.warmup_start}, not before its end at epoch {self.warmup_end}"
            )
        if self.warmup_end > 0 and self.epochs is not None and self.warmup_end > self.epochs:
            raise ConfigError(f"the KL warm-up ends at epoch {self.warmup_end}, after the run's {self.epochs} epochs")
        if self.cycles < 0:
            raise ConfigError(f"the number of KL cycles must be non-negative, got {self.cycles}")
        if self.cycles > 0 and (self.epochs is None or self.cycles > self.epochs):
            raise ConfigError(f"{self.cycles} KL cycles need at least as many epochs, the run has {self.epochs}")
        if not 0 < self.cycle_ratio <= 1:
            raise ConfigError(f"the KL cycle ratio must be in (0, 1], got {self.cycle_ratio}")

    @property
    def constant(self) -> bool:
        """Whether the weight is beta at every t (no warm-up, no cycles)."""
        return self.warmup_end == 0 and self.cycles == 0

    def __call__(self, t: float) -> float:
        weight = self.beta
        if self.warmup_end > 0:
            ramp = (t - self.warmup_start) / (self.warmup_end - self.warmup_start)
            weight *= self.start_weight + (1 - self.start_weight) * min(max(ramp, 0.0), 1.0)
        if self.cycles > 0:
            assert self.epochs is not None  # checked in __post_init__
            period = self.epochs / self.cycles
            tau = math.fmod(t, period) / period
            weight *= min(tau / self.cycle_ratio, 1.0)
        return weight

    def epoch_weight(self, epoch: int) -> float:
        """The weight of epoch ``epoch`` (1-based): the schedule at the epoch's midpoint."""
        return self(epoch - 0.5)
