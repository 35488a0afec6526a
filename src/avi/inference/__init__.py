"""Inference strategies: every one yields q(z|x) as "(x, index) -> Distribution"."""

from avi.encoders.amortized import AmortizedPosterior
from avi.inference.averaging import WeightAverage
from avi.inference.fit import History, compile_step, fit
from avi.inference.local import LocalPosterior, infer
from avi.inference.loop import Diverged, EpochStats, Hook, StepInfo, run, train_epoch, train_step
from avi.inference.refine import refine_params
from avi.inference.state import TrainState, make_optimizers
from avi.inference.svi import SVIInfo, SVIState, fit_batch_vi, fit_svi

__all__ = [
    "AmortizedPosterior",
    "Diverged",
    "EpochStats",
    "Hook",
    "History",
    "LocalPosterior",
    "SVIInfo",
    "SVIState",
    "StepInfo",
    "TrainState",
    "WeightAverage",
    "compile_step",
    "fit",
    "fit_batch_vi",
    "fit_svi",
    "infer",
    "make_optimizers",
    "refine_params",
    "run",
    "train_epoch",
    "train_step",
]
