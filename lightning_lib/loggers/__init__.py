"""Experiment loggers with the names and behaviour of ``pytorch_lightning.loggers``."""

from lightning_lib.loggers.csv import CSVLogger
from lightning_lib.loggers.logger import Logger
from lightning_lib.loggers.mlflow import MLFlowLogger
from lightning_lib.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "MLFlowLogger", "TensorBoardLogger"]
