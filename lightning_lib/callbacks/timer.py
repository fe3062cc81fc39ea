"""Timer: measure the time spent per stage and stop fitting once a time budget is used up.

Behaves like ``pytorch_lightning.callbacks.Timer`` 2.x; the training time survives a resume through
``state_dict`` so a restarted job keeps counting against the same budget.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from lightning_lib.callbacks.callback import Callback
from lightning_lib.trainer.states import RunningStage
from lightning_lib.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

log = logging.getLogger(__name__)

_INTERVALS = ("step", "epoch")


def _parse_duration(duration: str | timedelta | dict[str, int] | None) -> float | None:
    if duration is None:
        return None
    if isinstance(duration, str):
        match = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", duration.strip())
        if not match:
            raise MisconfigurationException(
                f"`Timer(duration={duration!r})` is not a valid duration. Expected a string in the format DD:HH:MM:SS."
            )
        days, hours, minutes, seconds = (int(g) for g in match.groups())
        duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    elif isinstance(duration, dict):
        duration = timedelta(**duration)
    return duration.total_seconds()


class Timer(Callback):
    """Track time per stage and set ``trainer.should_stop`` when ``duration`` of training has elapsed.

    Args:
        duration: ``"DD:HH:MM:SS"``, a :class:`datetime.timedelta`, or a dict of ``timedelta`` arguments;
            ``None`` only measures.
        interval: check the budget after every training ``"step"`` or at every ``"epoch"`` end.
        verbose: log a message when the limit is reached.
    """

    def __init__(
        self,
        duration: str | timedelta | dict[str, int] | None = None,
        interval: str = "step",
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if interval not in _INTERVALS:
            raise MisconfigurationException(
                f"Unsupported parameter value `Timer(interval={interval})`. Possible choices are:"
                f" {', '.join(_INTERVALS)}"
            )
        self._duration = _parse_duration(duration)
        self._interval = str(interval)
        self._verbose = verbose
        self._start_time: dict[RunningStage, float | None] = dict.fromkeys(RunningStage)
        self._end_time: dict[RunningStage, float | None] = dict.fromkeys(RunningStage)
        # Training seconds from before a resume.
        self._offset: float = 0.0

    def start_time(self, stage: str = RunningStage.TRAINING) -> float | None:
        """Monotonic clock value when ``stage`` started (seconds), or None."""
        return self._start_time[RunningStage(stage)]

    def end_time(self, stage: str = RunningStage.TRAINING) -> float | None:
        """Monotonic clock value when ``stage`` ended (seconds), or None."""
        return self._end_time[RunningStage(stage)]

    def time_elapsed(self, stage: str = RunningStage.TRAINING) -> float:
        """Seconds spent in ``stage``; for training, including the time before a resume."""
        stage = RunningStage(stage)
        start, end = self._start_time[stage], self._end_time[stage]
        offset = self._offset if stage == RunningStage.TRAINING else 0.0
        if start is None:
            return offset
        if end is None:
            return time.monotonic() - start + offset
        return end - start + offset

    def time_remaining(self, stage: str = RunningStage.TRAINING) -> float | None:
        """Seconds left in the budget, or None without a duration."""
        if self._duration is None:
            return None
        return self._duration - self.time_elapsed(stage)

    def _start(self, stage: RunningStage) -> None:
        self._start_time[stage] = time.monotonic()

    def _end(self, stage: RunningStage) -> None:
        self._end_time[stage] = time.monotonic()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(RunningStage.TRAINING)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(RunningStage.TRAINING)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(RunningStage.VALIDATING)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(RunningStage.VALIDATING)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(RunningStage.TESTING)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(RunningStage.TESTING)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A resumed run may already be over budget: stop before the first step.
        if self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._interval == "step" and self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._interval == "epoch" and self._duration is not None:
            self._check_time_remaining(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage.value: self.time_elapsed(stage) for stage in RunningStage}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = state_dict.get("time_elapsed", {}).get(RunningStage.TRAINING.value, 0)

    def _check_time_remaining(self, trainer: Trainer) -> None:
        assert self._duration is not None
        should_stop = self.time_elapsed() >= self._duration
        # Clocks differ between ranks; rank 0 decides so every rank stops at the same step.
        strategy = trainer.strategy
        broadcast = getattr(strategy, "broadcast", None)
        if broadcast is not None:
            should_stop = bool(broadcast(should_stop))
        else:
            should_stop = strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop and self._verbose and trainer.is_global_zero:
            elapsed = timedelta(seconds=int(self.time_elapsed(RunningStage.TRAINING)))
            log.info(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")
