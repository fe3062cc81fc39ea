"""The digits classifier whose rank 1 kills itself once, at a given step: a torchrun launch that fails the
way a lost GPU or an out-of-memory kill does, so the fit task's retry can be shown to resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from examples.digits import DigitsClassifier


class KillOnceDigitsClassifier(DigitsClassifier):
    def __init__(self, marker: str, kill_step: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.marker = marker
        self.kill_step = kill_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        marker = Path(self.marker)
        if self.global_rank == 1 and self.global_step == self.kill_step and not marker.exists():
            marker.touch()  # once: the retried launch trains on
            os.kill(os.getpid(), signal.SIGKILL)
