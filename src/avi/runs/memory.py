"""Sizes that do not fit: an allocation that fails becomes a one-line error naming the settings.

Where a run builds its model and posterior, trains on a batch, or sets up evaluation buffers,
the sizes come from settings (``model.latent_dim``, ``model.hidden``, ``objective.k``,
``evaluate.k`` ...) whose product no config check can bound without the data's dimensions and
the machine's memory. Code that allocates by them runs inside :func:`sized_by`, which turns the
allocator's failure (CPU or GPU memory, or a size past torch's 64 bits) into a
:class:`~avi.errors.ConfigError` that names them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from avi.errors import ConfigError
from avi.nn import WIDE_UNITS
from avi.objectives.select import takes
from avi.runs.config import Config

__all__ = ["EVALUATION_SIZES", "MODEL_SIZES", "TRAINING_SIZES", "allocation_failure", "settings_of", "sized_by"]

#: the settings that size a model and its posterior, a training step, an evaluation pass
MODEL_SIZES = (
    "model.latent_dim",
    "model.hidden",
    "model.activation",
    "model.num_classes",
    "model.layers",
    "model.layer_hidden",
    "inference.encoder_hidden",
    "inference.flow_transforms",
    "inference.flow_hidden",
    "inference.flow_length",
    "inference.householder_reflections",
)
TRAINING_SIZES = ("train.batch_size", "objective.num_samples", "objective.k")
EVALUATION_SIZES = ("evaluate.k", "evaluate.batch_size", "evaluate.chunk_size", "evaluate.memory_budget")

#: how torch says a size overflowed its 64 bits
_OVERFLOWS = ("storage size calculation overflowed", "overflow when unpacking long")
_BYTES = re.compile(r"allocate (\d+) bytes|Tried to allocate ([\d.]+ [KMGTP]?i?B)")


def allocation_failure(err: BaseException) -> str | None:
    """What ``err`` says ran out (``not enough memory (tried to allocate 64.0 GB)``, ``a tensor
    size past 64 bits``) where it is an allocation failure of the CPU's or a GPU's memory; else None."""
    text = str(err)
    if isinstance(err, MemoryError | torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in text
    ):
        found = _BYTES.search(text)
        if found is None:
            return "not enough memory"
        return f"not enough memory (tried to allocate {f'{int(found[1]) / 1e9:.1f} GB' if found[1] else found[2]})"
    if isinstance(err, OverflowError) or (
        isinstance(err, RuntimeError | TypeError | ValueError) and any(o in text.lower() for o in _OVERFLOWS)
    ):
        return "a tensor size past 64 bits"
    return None


#: where a size setting is read: those it does not apply to size nothing
_READ: dict[str, Callable[[Config], bool]] = {
    "model.hidden": lambda c: not c.model.custom,
    "model.activation": lambda c: not c.model.custom and c.model.activation in WIDE_UNITS,  # wider layers
    "model.num_classes": lambda c: c.model.name == "discrete-vae",
    "model.layers": lambda c: c.model.name == "hvae",
    "model.layer_hidden": lambda c: c.model.name == "hvae",
    "inference.flow_transforms": lambda c: c.inference.family in ("iaf", "nsf"),
    "inference.flow_hidden": lambda c: c.inference.family in ("iaf", "nsf"),
    "inference.householder_reflections": lambda c: c.inference.family == "sylvester",
    "objective.num_samples": lambda c: takes(c.objective.name, "num_samples"),
    "objective.k": lambda c: takes(c.objective.name, "k"),
}


def settings_of(config: Config, names: Iterable[str]) -> dict[str, Any]:
    """The values of the settings ``names`` (``section.field``) of ``config`` that size something
    in it: set (not None) and read (``objective.k`` by iwae, not by elbo)."""
    values = {name: getattr(getattr(config, name.split(".")[0]), name.split(".")[1]) for name in names}
    return {
        name: value for name, value in values.items() if value is not None and _READ.get(name, lambda _: True)(config)
    }


@contextmanager
def sized_by(settings: Mapping[str, Any]) -> Iterator[None]:
    """Inside, an allocation that fails (:func:`allocation_failure`) is a :class:`ConfigError`
    naming ``settings``, the values that sized it; other errors pass."""
    try:
        yield
    except (MemoryError, OverflowError, RuntimeError, TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        what = allocation_failure(err)
        if what is None:
            raise
        named = ", ".join(f"{name} = {value!r}" for name, value in settings.items())
        raise ConfigError(f"{what} for {named}; use smaller sizes") from None
