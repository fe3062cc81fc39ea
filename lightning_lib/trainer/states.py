"""Trainer state: what the trainer is doing, and the loop progress counters saved in checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any


class TrainerFn(str, Enum):
    """The user-facing entry point that is running."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(str, Enum):
    """The loop that is running; ``fit`` alternates between training, sanity checking and validating."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    @property
    def evaluating(self) -> bool:
        return self in (RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING)

    @property
    def dataloader_prefix(self) -> str:
        if self in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING):
            return "val"
        return self.value


class TrainerStatus(str, Enum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


@dataclass
class TrainerState:
    """``trainer.state``: which entry point, which loop, and whether it finished."""

    status: TrainerStatus = TrainerStatus.INITIALIZING
    fn: TrainerFn | None = None
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED


@dataclass
class FitProgress:
    """Counters of the fit loop; enough to resume exactly, down to the batch within the epoch.

    ``global_step`` counts optimizer steps (Lightning's meaning), ``batches_that_stepped`` is the step
    the loggers see, ``batch_idx`` is the index of the batch being processed in the current epoch and
    ``epoch_batches_done`` how many batches of the current epoch are finished.
    """

    current_epoch: int = 0
    global_step: int = 0
    batches_that_stepped: int = 0
    batch_idx: int = -1
    epoch_batches_done: int = 0
    total_batch_idx: int = -1
    epoch_started: bool = False
    resume_point: str = ""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in state.items():
            if key in names:
                setattr(self, key, value)
