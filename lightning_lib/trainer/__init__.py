"""The Trainer and its states."""

from lightning_lib.trainer.trainer import Trainer

__all__ = ["Trainer"]
