"""Numerical precision of the networks: float32, or bfloat16 under autocast.

With ``bf16`` the matrix products of avi's networks (the MLPs of decoders and encoders, the
MADE decoder) run under :func:`torch.autocast` in bfloat16, and each network returns its
output in the input's dtype, so that distributions, bounds and their reductions (log-sum-exp,
means over points) stay in float32. zuko's flow networks are not affected (they stay float32).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from avi.errors import ConfigError
from avi.nn import ReducedPrecision

__all__ = ["PRECISIONS", "bf16_supported", "compute_dtype", "full_precision", "resolve_precision", "set_precision"]

PRECISIONS = ("fp32", "bf16")


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively: a CUDA GPU of compute
    capability 8.0 or more (Ampere on; older GPUs only emulate bf16), or a CPU with AVX-512 BF16 /
    AMX as oneDNN reports it (False where this build cannot tell)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_properties(device).major >= 8
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private oneDNN query, absent from some builds
        return False


def resolve_precision(name: str, device: torch.device) -> tuple[str, str | None]:
    """The precision to run with and, where ``bf16`` falls back to ``fp32`` on hardware without
    bf16 support, the one-line message that says so."""
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; choose from {list(PRECISIONS)}")
    if name == "bf16" and not bf16_supported(device):
        return (
            "fp32",
            f"bf16 is not supported natively on this {device.type} (no AVX-512 BF16/AMX or bf16 GPU); running in fp32",
        )
    return name, None


def compute_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision: None for fp32 (no autocast)."""
    return torch.bfloat16 if precision == "bf16" else None


@contextmanager
def full_precision(*modules: nn.Module) -> Iterator[None]:
    """fp32 for the block (a bf16 run's validation and diagnostics), each network's setting
    restored after."""
    saved = [(m, m.compute_dtype) for module in modules for m in module.modules() if isinstance(m, ReducedPrecision)]
    for m, _ in saved:
        m.compute_dtype = None
    try:
        yield
    finally:
        for m, dtype in saved:
            m.compute_dtype = dtype


def set_precision(precision: str, *modules: nn.Module) -> None:
    """Run every avi network inside ``modules`` (those with a ``compute_dtype`` attribute) at
    ``precision``; parameters and outputs keep their dtype."""
    dtype = compute_dtype(precision)
    for module in modules:
        for m in module.modules():
            if isinstance(m, ReducedPrecision):
                m.compute_dtype = dtype
