"""Experiment loggers with the names and behaviour of ``pytorch_lightning.loggers``."""

from lightning_lib.loggers.comet import CometLogger
from lightning_lib.loggers.csv import CSVLogger
from lightning_lib.loggers.logger import Logger
from lightning_lib.loggers.mlflow import MLFlowLogger
from lightning_lib.loggers.tensorboard import TensorBoardLogger
from lightning_lib.loggers.wandb import WandbLogger

__all__ = ["CSVLogger", "CometLogger", "Logger", "MLFlowLogger", "TensorBoardLogger", "WandbLogger"]
