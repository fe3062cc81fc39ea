"""Callbacks with the names and behaviour of ``pytorch_lightning.callbacks``."""

from lightning_lib.callbacks.batch_size_finder import BatchSizeFinder
from lightning_lib.callbacks.callback import Callback
from lightning_lib.callbacks.device_stats_monitor import DeviceStatsMonitor
from lightning_lib.callbacks.early_stopping import EarlyStopping
from lightning_lib.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from lightning_lib.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from lightning_lib.callbacks.lambda_function import LambdaCallback
from lightning_lib.callbacks.lr_finder import LearningRateFinder
from lightning_lib.callbacks.lr_monitor import LearningRateMonitor
from lightning_lib.callbacks.model_checkpoint import Checkpoint, ModelCheckpoint
from lightning_lib.callbacks.model_summary import ModelSummary
from lightning_lib.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from lightning_lib.callbacks.prediction_writer import BasePredictionWriter
from lightning_lib.callbacks.progress import ProgressBar, TQDMProgressBar
from lightning_lib.callbacks.spike import SpikeDetection
from lightning_lib.callbacks.throughput_monitor import ThroughputMonitor
from lightning_lib.callbacks.timer import Timer

__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "BasePredictionWriter",
    "BatchSizeFinder",
    "Callback",
    "Checkpoint",
    "DeviceStatsMonitor",
    "EarlyStopping",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateFinder",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "SpikeDetection",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
]
