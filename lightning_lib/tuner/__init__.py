"""Tuning a model's learning rate and batch size before training (Lightning's ``pytorch_lightning.tuner``)."""

from lightning_lib.tuner.tuning import Tuner

__all__ = ["Tuner"]
