"""The LightningModule, the LightningDataModule, their hooks, hyper-parameters and LightningOptimizer."""

from lightning_lib.core.datamodule import LightningDataModule
from lightning_lib.core.module import LightningModule

__all__ = ["LightningDataModule", "LightningModule"]
