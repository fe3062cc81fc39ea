"""Read-mostly views of the run as Lightning's loop objects: ``trainer.fit_loop`` and its progress counters.

Lightning's Trainer owns loop objects (``trainer.fit_loop.epoch_loop.val_loop``...) that user code and
callbacks read for progress (``fit_loop.total_batch_idx``, ``epoch_progress.current.completed``, a val
loop's ``batch_progress``) and write for a few limits (``fit_loop.max_epochs``, ``epoch_loop.max_steps``).
Here the loops are functions over the run state, so these objects are thin views of that state and of the
Trainer's limits: reading them never changes a run, setting a limit sets the Trainer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


@dataclass(frozen=True)
class Counts:
    """How many items were started (``ready``) and finished (``completed``)."""

    ready: int
    completed: int


@dataclass(frozen=True)
class Progress:
    """Counts over the whole run (``total``) and over the current epoch or loop run (``current``)."""

    total: Counts
    current: Counts

    @classmethod
    def of(cls, total: int, current: int) -> Progress:
        return cls(Counts(total, total), Counts(current, current))


class EvaluationLoopView:
    """``trainer.validate_loop`` / ``test_loop`` / ``predict_loop`` (and the fit's ``val_loop``)."""

    def __init__(self, trainer: Trainer, stage: str) -> None:
        self._trainer = trainer
        self._stage = stage

    @property
    def batch_progress(self) -> Progress:
        """Batches completed since the entry point started (``total``) and in the latest run (``current``)."""
        total, current = self._trainer._run_state.eval_batches.get(self._stage, (0, 0))
        return Progress.of(total, current)

    @property
    def max_batches(self) -> list[int | float]:
        """Batches per dataloader this loop takes."""
        prefix = {"validate": "val", "test": "test", "predict": "predict"}[self._stage]
        return self._trainer._data.batch_counts(prefix)  # type: ignore[arg-type]


class TrainingEpochLoopView:
    """``trainer.fit_loop.epoch_loop``: the batches of an epoch and the step limits."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.val_loop = EvaluationLoopView(trainer, "validate")

    @property
    def max_steps(self) -> int:
        return self._trainer.max_steps

    @max_steps.setter
    def max_steps(self, value: int) -> None:
        self._trainer.max_steps = value

    @property
    def restarting(self) -> bool:
        """Whether the fit is resuming from a checkpoint and has not reached its first batch yet."""
        return self._trainer._run_state.resume is not None

    @property
    def min_steps(self) -> int | None:
        return self._trainer.min_steps

    @min_steps.setter
    def min_steps(self, value: int | None) -> None:
        self._trainer.min_steps = value

    @property
    def global_step(self) -> int:
        return self._trainer.global_step

    @property
    def batch_idx(self) -> int:
        return self._trainer._run_state.progress.batch_idx

    @property
    def total_batch_idx(self) -> int:
        return self._trainer._run_state.progress.total_batch_idx

    @property
    def batch_progress(self) -> Progress:
        progress = self._trainer._run_state.progress
        return Progress.of(progress.total_batch_idx + 1, progress.epoch_batches_done)


class FitLoopView:
    """``trainer.fit_loop``: the epochs of a fit, their limits and counters."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.epoch_loop = TrainingEpochLoopView(trainer)

    @property
    def max_epochs(self) -> int | None:
        return self._trainer.max_epochs

    @max_epochs.setter
    def max_epochs(self, value: int | None) -> None:
        self._trainer.max_epochs = value

    @property
    def max_steps(self) -> int:
        return self._trainer.max_steps

    @max_steps.setter
    def max_steps(self, value: int) -> None:
        self._trainer.max_steps = value

    @property
    def min_epochs(self) -> int | None:
        return self._trainer.min_epochs

    @min_epochs.setter
    def min_epochs(self, value: int | None) -> None:
        self._trainer.min_epochs = value

    @property
    def max_batches(self) -> int | float:
        """Training batches per epoch (``trainer.num_training_batches``)."""
        return self._trainer._data.num_training_batches

    @max_batches.setter
    def max_batches(self, value: int | float) -> None:
        self._trainer._data.num_training_batches = value

    @property
    def _skip_backward(self) -> bool:
        return self._trainer._run_state.skip_backward

    @_skip_backward.setter
    def _skip_backward(self, value: bool) -> None:
        self._trainer._run_state.skip_backward = value

    @property
    def total_batch_idx(self) -> int:
        return self.epoch_loop.total_batch_idx

    @property
    def batch_idx(self) -> int:
        return self.epoch_loop.batch_idx

    @property
    def epoch_progress(self) -> Progress:
        """Epochs started (``ready``) and finished (``completed``); ``current`` equals ``total`` in one fit."""
        progress = self._trainer._run_state.progress
        completed = progress.current_epoch
        ready = completed + (1 if progress.epoch_started else 0)
        counts = Counts(ready, completed)
        return Progress(counts, counts)

    @property
    def done(self) -> bool:
        """Whether a stopping condition holds (max_steps, max_epochs, or a stop request past the minimums)."""
        from lightning_lib.loop.fit import fit_done

        return fit_done(self._trainer)

    @property
    def restarting(self) -> bool:
        """Whether the fit is resuming from a checkpoint and has not reached its first batch yet."""
        return self._trainer._run_state.resume is not None

    def state_dict(self) -> dict[str, Any]:
        """The fit's progress counters as plain data (what a checkpoint records of the loop)."""
        return self._trainer._run_state.progress.state_dict()

    def setup_data(self) -> None:
        """Request and count the train dataloaders now (Lightning does it when the fit starts)."""
        self._trainer._data.setup_train_data()


__all__ = ["Counts", "EvaluationLoopView", "FitLoopView", "Progress", "TrainingEpochLoopView"]
