"""Weight averaging: an exponential moving average of the weights over the optimiser steps.

Polyak averaging as Lightning's EMA callback and timm's ModelEmaV2 keep it: after the t-th update
(t = 0, 1, ...) the shadow weights are s <- d_t s + (1 - d_t) p, with p the weights after that
step and d_t = min(d, (1 + t) / (10 + t)), s starting at the initial weights p_0. Unrolled,
s_T = prod_t d_t p_0 + sum_t (1 - d_t) prod_{u>t} d_u p_{t+1}; without the warm-up (d_t = d)
that is d^T p_0 + sum_t (1 - d) d^(T-1-t) p_{t+1}.

The warm-up is TensorFlow's (``ExponentialMovingAverage`` given ``num_updates``; timm's
ModelEmaV3 warms up too, by another formula). Without it the initial weights keep the weight
d^T in the average, 0.61 after 500 steps at d = 0.999 (an epoch of MNIST at batch 100), so the
first epochs would validate, diagnose and early-stop a mostly random network; with it the first
update keeps 0.1 of p_0, and d_t reaches d after about 9 / (1 - d) steps, from where the average
forgets at its full horizon of about 1 / (1 - d) steps.

What is averaged: the dense parameters of the model and the posterior (encoder, decoder, flow
networks, a learned prior), each parameter once where the two share it. Not averaged: a
posterior's per-point table (:class:`~avi.inference.local.LocalPosterior`; each row moves only
when its point is in the batch, and evaluation infers new points' parameters anyway), an
estimator's baseline network (training machinery, unused at evaluation), and the buffers, which
the averaged weights take from the raw ones as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from avi.families.posterior import Posterior
from avi.inference.loop import Hook, StepInfo
from avi.inference.state import TrainState

__all__ = ["WeightAverage", "averaged", "decay_at", "load_averaged"]

#: the modules whose weights are averaged, by their key in a state dict
_MODULES = ("model", "posterior")


def decay_at(decay: float, updates: int) -> float:
    """The decay of update ``updates`` (0-based): min(decay, (1 + t) / (10 + t))."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage(Hook):
    """The shadow weights of ``model`` and ``posterior`` at ``decay`` d in (0, 1), updated by
    :meth:`update` after every optimiser step (as a hook of the loop: its ``on_step``; in an
    aggressive epoch after each decoder step, the encoder's inner steps between counted once);
    ``updates`` counts them. The same on every process under data parallelism, where every
    process holds the same weights after a step."""

    def __init__(self, model: nn.Module, posterior: Posterior, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the decay of a weight average must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        tables = {id(p) for group in posterior.param_groups() if group.table for p in group.params}
        self.params: list[Tensor] = []
        #: per module, each averaged parameter's name and its index in ``params``
        self.names: dict[str, list[tuple[str, int]]] = {}
        index: dict[int, int] = {}
        for key, module in zip(_MODULES, (model, posterior), strict=True):
            self.names[key] = []
            for name, param in module.named_parameters():
                if id(param) in tables or not param.requires_grad:
                    continue
                if id(param) not in index:
                    index[id(param)] = len(self.params)
                    self.params.append(param)
                self.names[key].append((name, index[id(param)]))
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """s <- d_t s + (1 - d_t) p for every averaged parameter p (:func:`decay_at`)."""
        if self.shadow:
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay_at(self.decay, self.updates))
        self.updates += 1

    def on_step(self, state: TrainState, info: StepInfo) -> None:
        self.update()

    @torch.no_grad()
    def copy_to(self) -> None:
        """Write the averaged weights into the modules' parameters, over the raw ones."""
        if self.shadow:
            torch._foreach_copy_(self.params, self.shadow)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the modules for the block, the raw ones restored after, bit for bit."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, raw)

    def state_dict(self) -> dict[str, Any]:
        """``updates``, and per module the averaged parameters by their state-dict names."""
        weights = {key: {name: self.shadow[i] for name, i in names} for key, names in self.names.items()}
        return {"updates": self.updates, **weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; ValueError where its names or shapes differ."""
        for key, names in self.names.items():
            saved = state[key]
            if sorted(saved) != sorted(name for name, _ in names):
                raise ValueError(f"its averaged {key} weights are not those of the run")
            with torch.no_grad():
                for name, i in names:
                    self.shadow[i].copy_(saved[name])
        self.updates = int(state["updates"])


def averaged(average: WeightAverage | None) -> AbstractContextManager[None]:
    """The averaged weights applied for a block (:meth:`WeightAverage.applied`); nothing without an average."""
    return nullcontext() if average is None else average.applied()


def load_averaged(model: nn.Module, posterior: nn.Module, state: dict[str, Any]) -> None:
    """Load the averaged weights of :meth:`WeightAverage.state_dict` into ``model`` and
    ``posterior`` (over their raw weights: the per-point table and the buffers stay those);
    ValueError where a name is not theirs, RuntimeError where a shape differs."""
    for key, module in zip(_MODULES, (model, posterior), strict=True):
        unexpected = module.load_state_dict(state[key], strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"its averaged {key} weights name {unexpected[0]!r}, which the run lacks")
