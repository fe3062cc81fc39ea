"""Lightning's loop progress counters: how many epochs, batches, optimizer and scheduler steps were
ready, started, processed and completed, over the Trainer's life (``total``) and the current run of a
loop (``current``).

The loops advance them at Lightning's moments, so a checkpoint taken in any hook holds the same counts
as Lightning's (``checkpoint["loops"]["fit_loop"]``) and user code reading
``trainer.fit_loop.epoch_loop.batch_progress.current.completed`` sees Lightning's numbers. The
``reset*`` methods have Lightning's meaning: ``reset`` zeroes everything, ``reset_on_run`` zeroes the
current run, ``reset_on_restart`` rolls the current run back to what had completed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar


@dataclass
class ReadyCompletedTracker:
    """Events ready to start and events completed, counted in that order."""

    ready: int = 0
    completed: int = 0

    def reset(self) -> None:
        self.ready = 0
        self.completed = 0

    def reset_on_restart(self) -> None:
        """An event that did not complete is forgotten: back to the last completed count."""
        self.ready = self.completed

    def increment_by(self, n: int) -> None:
        self.ready += n
        self.completed += n

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class StartedTracker(ReadyCompletedTracker):
    """Also counts the events that started (their ``*_start`` hooks ran)."""

    started: int = 0

    def reset(self) -> None:
        super().reset()
        self.started = 0

    def reset_on_restart(self) -> None:
        super().reset_on_restart()
        self.started = self.completed

    def increment_by(self, n: int) -> None:
        super().increment_by(n)
        self.started += n


@dataclass
class ProcessedTracker(StartedTracker):
    """Also counts the events processed (their step ran, their ``*_end`` hooks not yet)."""

    processed: int = 0

    def reset(self) -> None:
        super().reset()
        self.processed = 0

    def reset_on_restart(self) -> None:
        super().reset_on_restart()
        self.processed = self.completed

    def increment_by(self, n: int) -> None:
        super().increment_by(n)
        self.processed += n


T = TypeVar("T", bound=ReadyCompletedTracker)
S = TypeVar("S", bound=StartedTracker)
P = TypeVar("P", bound=ProcessedTracker)


@dataclass
class Progress(Generic[T]):
    """A tracker over the Trainer's life (``total``) and one over the current run (``current``)."""

    total: T
    current: T

    @classmethod
    def of(cls, tracker: type[T]) -> Progress[T]:
        return cls(total=tracker(), current=tracker())

    def increment_ready(self) -> None:
        self.total.ready += 1
        self.current.ready += 1

    def increment_started(self: Progress[S]) -> None:
        self.total.started += 1
        self.current.started += 1

    def increment_processed(self: Progress[P]) -> None:
        self.total.processed += 1
        self.current.processed += 1

    def increment_completed(self) -> None:
        self.total.completed += 1
        self.current.completed += 1

    def increment_by(self, n: int) -> None:
        self.total.increment_by(n)
        self.current.increment_by(n)

    def reset(self) -> None:
        self.total.reset()
        self.current.reset()

    def reset_on_run(self) -> None:
        self.current.reset()

    def reset_on_restart(self) -> None:
        self.current.reset_on_restart()

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.state_dict(), "current": self.current.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total.load_state_dict(state["total"])
        self.current.load_state_dict(state["current"])


def processed_progress() -> Progress[ProcessedTracker]:
    """Counters of events with all four stages (epochs, batches)."""
    return Progress.of(ProcessedTracker)


@dataclass
class BatchProgress(Progress[ProcessedTracker]):
    """Batch counters and whether the latest batch was the last of its epoch (or of its loaders)."""

    total: ProcessedTracker = field(default_factory=ProcessedTracker)
    current: ProcessedTracker = field(default_factory=ProcessedTracker)
    is_last_batch: bool = False

    def reset(self) -> None:
        super().reset()
        self.is_last_batch = False

    def reset_on_run(self) -> None:
        super().reset_on_run()
        self.is_last_batch = False

    def increment_by(self, n: int, is_last_batch: bool = False) -> None:
        super().increment_by(n)
        self.is_last_batch = is_last_batch

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "is_last_batch": self.is_last_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.is_last_batch = state["is_last_batch"]


def scheduler_progress() -> Progress[ReadyCompletedTracker]:
    """Scheduler steps: ready and completed only."""
    return Progress.of(ReadyCompletedTracker)


@dataclass
class OptimizerProgress:
    """``optimizer.step`` calls (ready, completed) and ``zero_grad`` calls (ready, started, completed)."""

    step: Progress[ReadyCompletedTracker] = field(default_factory=scheduler_progress)
    zero_grad: Progress[StartedTracker] = field(default_factory=lambda: Progress.of(StartedTracker))

    def reset(self) -> None:
        self.step.reset()
        self.zero_grad.reset()

    def reset_on_run(self) -> None:
        self.step.reset_on_run()
        self.zero_grad.reset_on_run()

    def reset_on_restart(self) -> None:
        self.step.reset_on_restart()
        self.zero_grad.reset_on_restart()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step.state_dict(), "zero_grad": self.zero_grad.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step.load_state_dict(state["step"])
        self.zero_grad.load_state_dict(state["zero_grad"])


@dataclass
class OptimizationProgress:
    """The automatic optimization's counters (one optimizer)."""

    optimizer: OptimizerProgress = field(default_factory=OptimizerProgress)

    @property
    def optimizer_steps(self) -> int:
        return self.optimizer.step.total.completed

    def reset(self) -> None:
        self.optimizer.reset()

    def reset_on_run(self) -> None:
        self.optimizer.reset_on_run()

    def reset_on_restart(self) -> None:
        self.optimizer.reset_on_restart()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


@dataclass
class LoopCounters:
    """Every loop's counters, owned by the Trainer for its life (a second fit continues them)."""

    epoch: Progress[ProcessedTracker] = field(default_factory=processed_progress)
    batch: BatchProgress = field(default_factory=BatchProgress)
    scheduler: Progress[ReadyCompletedTracker] = field(default_factory=scheduler_progress)
    optim: OptimizationProgress = field(default_factory=OptimizationProgress)
    manual_step: Progress[ReadyCompletedTracker] = field(default_factory=scheduler_progress)
    # the fit's validation loop is not ``trainer.validate_loop`` (Lightning keeps them apart)
    fit_val: BatchProgress = field(default_factory=BatchProgress)
    validate: BatchProgress = field(default_factory=BatchProgress)
    test: BatchProgress = field(default_factory=BatchProgress)
    predict: Progress[ProcessedTracker] = field(default_factory=processed_progress)

    def eval_progress(self, stage: str, fitting: bool) -> BatchProgress:
        """The batch counters of evaluation ``stage`` ("validate" or "test")."""
        if stage == "test":
            return self.test
        return self.fit_val if fitting else self.validate


__all__ = [
    "BatchProgress",
    "LoopCounters",
    "OptimizationProgress",
    "OptimizerProgress",
    "ProcessedTracker",
    "Progress",
    "ReadyCompletedTracker",
    "StartedTracker",
    "processed_progress",
    "scheduler_progress",
]
