"""Callbacks with the names and behaviour of ``pytorch_lightning.callbacks``."""

from lightning_lib.callbacks.callback import Callback
from lightning_lib.callbacks.early_stopping import EarlyStopping
from lightning_lib.callbacks.lambda_function import LambdaCallback
from lightning_lib.callbacks.lr_monitor import LearningRateMonitor
from lightning_lib.callbacks.model_checkpoint import Checkpoint, ModelCheckpoint
from lightning_lib.callbacks.model_summary import ModelSummary
from lightning_lib.callbacks.progress import ProgressBar, TQDMProgressBar
from lightning_lib.callbacks.timer import Timer

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "LambdaCallback",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "ProgressBar",
    "TQDMProgressBar",
    "Timer",
]
