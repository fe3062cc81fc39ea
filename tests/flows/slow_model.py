"""The digits classifier with a pause in each training step: a fit that lasts long enough to be killed
in the middle (the pause changes no number, so the weights equal an unpaused run's)."""

from __future__ import annotations

import time
from typing import Any

import torch

from examples.digits import DigitsClassifier


class SlowDigitsClassifier(DigitsClassifier):
    def __init__(self, step_sleep: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.step_sleep = step_sleep

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        time.sleep(self.step_sleep)
        return super().training_step(batch, batch_idx)
