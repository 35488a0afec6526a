"""Inference strategies: every one yields q(z|x) as "(x, index) -> Distribution"."""

from avi.encoders.amortized import AmortizedPosterior
from avi.inference.fit import EpochStats, History, compile_step, fit, make_optimizers, train_epoch
from avi.inference.local import LocalPosterior, infer
from avi.inference.refine import refine_params
from avi.inference.svi import SVIInfo, SVIState, fit_batch_vi, fit_svi

__all__ = [
    "AmortizedPosterior",
    "EpochStats",
    "History",
    "LocalPosterior",
    "SVIInfo",
    "SVIState",
    "compile_step",
    "fit",
    "fit_batch_vi",
    "fit_svi",
    "infer",
    "make_optimizers",
    "refine_params",
    "train_epoch",
]
