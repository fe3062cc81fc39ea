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
from lightning_lib.callbacks.progress import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning_lib.callbacks.pruning import ModelPruning
from lightning_lib.callbacks.rich_model_summary import RichModelSummary
from lightning_lib.callbacks.spike import SpikeDetection
from lightning_lib.callbacks.stochastic_weight_avg import StochasticWeightAveraging
from lightning_lib.callbacks.throughput_monitor import ThroughputMonitor
from lightning_lib.callbacks.timer import Timer
from lightning_lib.callbacks.weight_averaging import EMAWeightAveraging, WeightAveraging

__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "BasePredictionWriter",
    "BatchSizeFinder",
    "Callback",
    "Checkpoint",
    "DeviceStatsMonitor",
    "EMAWeightAveraging",
    "EarlyStopping",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateFinder",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelPruning",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "RichModelSummary",
    "RichProgressBar",
    "SpikeDetection",
    "StochasticWeightAveraging",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
    "WeightAveraging",
]
