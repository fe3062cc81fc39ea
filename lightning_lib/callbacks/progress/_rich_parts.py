"""The rich pieces of ``RichProgressBar``: its progress display and columns. Imports rich, so it is only
imported once a rich callback is built (``import lightning_lib`` never imports rich)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rich import get_console, reconfigure
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.progress_bar import ProgressBar as _RichBar
from rich.style import Style
from rich.text import Text

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


class CustomBarColumn(BarColumn):
    """A bar that pulses while the total is unknown (an iterable dataset without a length)."""

    def render(self, task: Task) -> _RichBar:
        assert task.total is not None and task.remaining is not None
        return _RichBar(
            total=max(0, task.total),
            completed=max(0, task.completed),
            width=None if self.bar_width is None else max(1, self.bar_width),
            pulse=not task.started or not math.isfinite(task.remaining),
            animation_time=task.get_time(),
            style=self.style,
            complete_style=self.complete_style,
            finished_style=self.finished_style,
            pulse_style=self.pulse_style,
        )


@dataclass
class CustomInfiniteTask(Task):
    """A task of unknown length: no time remaining to estimate."""

    @property
    def time_remaining(self) -> float | None:
        return None


class CustomProgress(Progress):
    """rich's ``Progress`` that also takes tasks of infinite total."""

    def add_task(
        self,
        description: str,
        start: bool = True,
        total: float | None = 100.0,
        completed: int = 0,
        visible: bool = True,
        **fields: Any,
    ) -> TaskID:
        assert total is not None
        if math.isfinite(total):
            return super().add_task(description, start, total, completed, visible, **fields)
        task = CustomInfiniteTask(
            self._task_index,
            description,
            total,
            completed,
            visible=visible,
            fields=fields,
            _get_time=self.get_time,
            _lock=self._lock,
        )
        return self.add_custom_task(task, start)

    def add_custom_task(self, task: CustomInfiniteTask, start: bool = True) -> TaskID:
        """Register a task built by the caller (an infinite one)."""
        with self._lock:
            index = self._task_index
            self._tasks[index] = task
            if start:
                self.start_task(index)
            self._task_index = TaskID(int(index) + 1)
        self.refresh()
        return index


class CustomTimeColumn(ProgressColumn):
    """``elapsed • remaining``."""

    max_refresh = 0.5

    def __init__(self, style: str | Style) -> None:
        self.style = style
        super().__init__()

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        remaining = task.time_remaining
        shown = ["-:--:--" if t is None else str(timedelta(seconds=int(t))) for t in (elapsed, remaining)]
        return Text(" • ".join(shown), style=self.style)


class BatchesProcessedColumn(ProgressColumn):
    """``done/total`` (``--`` for an unknown total)."""

    def __init__(self, style: str | Style) -> None:
        self.style = style
        super().__init__()

    def render(self, task: Task) -> RenderableType:
        total = "--" if task.total == float("inf") else task.total
        return Text(f"{int(task.completed)}/{total}", style=self.style)


class ProcessingSpeedColumn(ProgressColumn):
    """Batches per second."""

    def __init__(self, style: str | Style) -> None:
        self.style = style
        super().__init__()

    def render(self, task: Task) -> RenderableType:
        speed = f"{task.speed:>.2f}" if task.speed is not None else "0.00"
        return Text(f"{speed}it/s", style=self.style)


class MetricsTextColumn(ProgressColumn):
    """The progress-bar metrics, shown next to the training bar while fitting."""

    def __init__(
        self, trainer: Trainer, style: str | Style, text_delimiter: str, metrics_format: str
    ) -> None:
        self._trainer = trainer
        self._metrics: dict[str, Any] = {}
        self._style = style
        self._text_delimiter = text_delimiter
        self._metrics_format = metrics_format
        super().__init__()

    def update(self, metrics: dict[str, Any]) -> None:
        """Show ``metrics`` from the next refresh on."""
        self._metrics = metrics

    def render(self, task: Task) -> Text:
        trainer = self._trainer
        bar = trainer.progress_bar_callback
        if (
            trainer.state.fn != "fit"
            or trainer.sanity_checking
            or getattr(bar, "train_progress_bar_id", None) != task.id
        ):
            return Text()
        return Text(self._text_delimiter.join(self._texts()), justify="left", style=self._style)

    def _texts(self) -> list[str]:
        texts = []
        for name, value in self._metrics.items():
            if not isinstance(value, str):
                try:
                    value = f"{value:{self._metrics_format}}"
                except (TypeError, ValueError):
                    value = str(value)
            texts.append(f"{name}: {value}")
        return texts


__all__ = [
    "BarColumn",
    "BatchesProcessedColumn",
    "Console",
    "CustomBarColumn",
    "CustomInfiniteTask",
    "CustomProgress",
    "CustomTimeColumn",
    "MetricsTextColumn",
    "ProcessingSpeedColumn",
    "Progress",
    "ProgressColumn",
    "RenderableType",
    "Style",
    "Task",
    "TaskID",
    "Text",
    "TextColumn",
    "get_console",
    "reconfigure",
]
