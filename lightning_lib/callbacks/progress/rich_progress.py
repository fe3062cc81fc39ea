"""RichProgressBar (Lightning's ``callbacks.progress.rich_progress``): progress bars drawn with rich.

rich is optional (``pip install lightning-lib[rich]``) and imported only when a bar is built; its names
used here (``Progress``, ``TextColumn``, the custom columns, ...) are attributes of this module on first
access, as in Lightning, so code that refers to ``rich_progress.Progress`` keeps working.

One difference from Lightning: no refresh thread. The display is redrawn from the training thread, at
most ``refresh_rate`` times a second (and always when a bar finishes), so nothing is left running
between hooks or after a failed fit.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.callbacks.progress.progress_bar import ProgressBar

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

_RICH_INSTALL_HINT = "Install it by running `pip install lightning-lib[rich]` (or `pip install -U rich`)."
_PARTS = "lightning_lib.callbacks.progress._rich_parts"
_LAZY_NAMES = frozenset(
    {
        "BarColumn", "BatchesProcessedColumn", "Console", "CustomBarColumn", "CustomInfiniteTask",
        "CustomProgress", "CustomTimeColumn", "MetricsTextColumn", "ProcessingSpeedColumn", "Progress",
        "ProgressColumn", "RenderableType", "Style", "Task", "TaskID", "Text", "TextColumn", "get_console",
        "reconfigure",
    }
)  # fmt: skip


def _rich_available() -> bool:
    return importlib.util.find_spec("rich") is not None


# Lightning's flag (tests switch it off to see the error); finding the package does not import it
_RICH_AVAILABLE = _rich_available()


def _require_rich(owner: str) -> None:
    """Raise a ModuleNotFoundError naming the extra to install when rich is missing."""
    if not (_RICH_AVAILABLE and _rich_available()):
        raise ModuleNotFoundError(f"`{owner}` requires `rich` >= 10.2.2. {_RICH_INSTALL_HINT}")


def _rich(name: str) -> Any:
    """A rich name through this module's namespace, so that a patched module attribute is what gets used."""
    found = globals().get(name)
    return found if found is not None else __getattr__(name)


def __getattr__(name: str) -> Any:
    # rich's names resolve on first use: importing this module must not import rich
    if name in _LAZY_NAMES and _rich_available():
        value = getattr(importlib.import_module(_PARTS), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class RichProgressBarTheme:
    """Styles of the bar's parts (rich style strings or ``rich.style.Style`` objects).

    Args:
        description: the description ("Epoch 3/9", "Validation").
        progress_bar: the bar while running.
        progress_bar_finished: the finished bar.
        progress_bar_pulse: the bar of an iterable of unknown length.
        batch_progress: the ``done/total`` counter.
        time: elapsed and remaining time.
        processing_speed: batches per second.
        metrics: the metrics text.
        metrics_text_delimiter: between two metrics.
        metrics_format: format spec of numeric metrics.
    """

    description: Any = ""
    progress_bar: Any = "#6206E0"
    progress_bar_finished: Any = "#6206E0"
    progress_bar_pulse: Any = "#6206E0"
    batch_progress: Any = ""
    time: Any = "dim"
    processing_speed: Any = "dim underline"
    metrics: Any = "italic"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


# one shared default, as Lightning's (the theme is only read)
_DEFAULT_THEME = RichProgressBarTheme()


class RichProgressBar(ProgressBar):
    """Progress bars with rich's formatting.

    Args:
        refresh_rate: redraws per second at most; 0 disables the display.
        leave: keep each finished epoch's bar on screen.
        theme: the styles, a :class:`RichProgressBarTheme`.
        console_kwargs: arguments for the rich ``Console`` (``reconfigure``).
    """

    def __init__(
        self,
        refresh_rate: int = 100,
        leave: bool = False,
        theme: RichProgressBarTheme = _DEFAULT_THEME,
        console_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _require_rich(type(self).__name__)
        super().__init__()
        self._refresh_rate = refresh_rate
        self._leave = leave
        self._console: Any = None
        self._console_kwargs = console_kwargs or {}
        self._enabled = True
        self.progress: Any = None
        self.train_progress_bar_id: Any = None
        self.val_sanity_progress_bar_id: Any = None
        self.val_progress_bar_id: Any = None
        self.test_progress_bar_id: Any = None
        self.predict_progress_bar_id: Any = None
        self._metric_component: Any = None
        self._progress_stopped = False
        self._refreshed_at = 0.0
        self.theme = theme

    @property
    def refresh_rate(self) -> float:
        return self._refresh_rate

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def _task(self, task_id: Any) -> Any:
        assert self.progress is not None and task_id is not None
        return self.progress.tasks[task_id]

    @property
    def train_progress_bar(self) -> Any:
        return self._task(self.train_progress_bar_id)

    @property
    def val_sanity_check_bar(self) -> Any:
        return self._task(self.val_sanity_progress_bar_id)

    @property
    def val_progress_bar(self) -> Any:
        return self._task(self.val_progress_bar_id)

    @property
    def test_progress_bar(self) -> Any:
        return self._task(self.test_progress_bar_id)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def configure_columns(self, trainer: Trainer) -> list[Any]:
        """The columns left of the metrics; override to change them."""
        return [
            _rich("TextColumn")("[progress.description]{task.description}"),
            _rich("CustomBarColumn")(
                complete_style=self.theme.progress_bar,
                finished_style=self.theme.progress_bar_finished,
                pulse_style=self.theme.progress_bar_pulse,
            ),
            _rich("BatchesProcessedColumn")(style=self.theme.batch_progress),
            _rich("CustomTimeColumn")(style=self.theme.time),
            _rich("ProcessingSpeedColumn")(style=self.theme.processing_speed),
        ]

    def _init_progress(self, trainer: Trainer) -> None:
        if not self.is_enabled or (self.progress is not None and not self._progress_stopped):
            return
        self._reset_progress_bar_ids()
        _rich("reconfigure")(**self._console_kwargs)
        self._console = _rich("get_console")()
        # a display left live by an interrupted run would refuse a second one
        if getattr(self._console, "_live_stack", None) or getattr(self._console, "_live", None):
            self._console.clear_live()
        self._metric_component = _rich("MetricsTextColumn")(
            trainer, self.theme.metrics, self.theme.metrics_text_delimiter, self.theme.metrics_format
        )
        self.progress = _rich("CustomProgress")(
            *self.configure_columns(trainer),
            self._metric_component,
            auto_refresh=False,
            disable=self.is_disabled,
            console=self._console,
        )
        self.progress.start()
        self._progress_stopped = False

    def refresh(self, hard: bool = False) -> None:
        """Redraw now if ``hard``, else if the last redraw is older than ``1 / refresh_rate`` seconds."""
        if not self.progress or self.refresh_rate <= 0:
            return
        now = time.monotonic()
        if hard or now - self._refreshed_at >= 1 / self.refresh_rate:
            self._refreshed_at = now
            self.progress.refresh()

    def _add_task(self, total_batches: int | float, description: str, visible: bool = True) -> Any:
        assert self.progress is not None
        styled = f"[{self.theme.description}]{description}" if self.theme.description else description
        return self.progress.add_task(styled, total=total_batches, visible=visible)

    def _update(self, progress_bar_id: Any, current: int, visible: bool = True, hard: bool = False) -> None:
        if self.progress is not None and self.is_enabled and progress_bar_id is not None:
            self.progress.update(progress_bar_id, completed=current, visible=visible)
            task = self.progress.tasks[progress_bar_id]
            self.refresh(hard=hard or (task.total is not None and current >= task.total))

    def _hide(self, task_id: Any) -> None:
        if self.progress is not None and task_id is not None:
            self.progress.update(task_id, advance=0, visible=False)

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch}"
        if self.trainer.max_epochs is not None:
            description += f"/{self.trainer.max_epochs - 1}"
        # as wide as "Validation", so the bars line up
        return f"{description:{len(self.validation_description)}}"

    def _initialize_train_progress_bar_id(self) -> None:
        self.train_progress_bar_id = self._add_task(
            self.total_train_batches, self._get_train_description(self.trainer.current_epoch)
        )

    def _stop_progress(self) -> None:
        # once, whichever of on_exception, teardown or the next epoch (leave=True) comes first
        if self.progress is not None and not self._progress_stopped:
            self.progress.stop()
            self._progress_stopped = True

    def _reset_progress_bar_ids(self) -> None:
        self.train_progress_bar_id = None
        self.val_sanity_progress_bar_id = None
        self.val_progress_bar_id = None
        self.test_progress_bar_id = None
        self.predict_progress_bar_id = None

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in items.items()}

    def _update_metrics(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.is_enabled and self._metric_component is not None:
            self._metric_component.update(self.get_metrics(trainer, pl_module))

    # ---- hooks ---------------------------------------------------------------------------------------
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._init_progress(trainer)

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._hide(self.val_sanity_progress_bar_id)
        self.refresh()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._init_progress(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._init_progress(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._init_progress(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._init_progress(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.is_disabled:
            return
        total = self.total_train_batches
        description = self._get_train_description(trainer.current_epoch)
        if self.train_progress_bar_id is not None and self._leave:
            # the finished epoch's display stays on screen; the next epoch gets a new one
            self._stop_progress()
            self._init_progress(trainer)
        if self.progress is not None:
            if self.train_progress_bar_id is None:
                self.train_progress_bar_id = self._add_task(total, description)
            else:
                self.progress.reset(
                    self.train_progress_bar_id, total=total, description=description, visible=True
                )
        self.refresh()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.is_enabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update_metrics(trainer, pl_module)
        self._update(self.train_progress_bar_id, batch_idx + 1)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update_metrics(trainer, pl_module)
        self.refresh(hard=True)

    def _new_eval_task(self, old_id: Any, total: int | float, description: str, visible: bool) -> Any:
        self._hide(old_id)
        return self._add_task(total, description, visible=visible)

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_disabled or not self.has_dataloader_changed(dataloader_idx):
            return
        total = self.total_val_batches_current_dataloader
        if trainer.sanity_checking:
            self.val_sanity_progress_bar_id = self._new_eval_task(
                self.val_sanity_progress_bar_id, total, self.sanity_check_description, visible=False
            )
        else:
            self.val_progress_bar_id = self._new_eval_task(
                self.val_progress_bar_id, total, self.validation_description, visible=False
            )
        self.refresh()

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_disabled:
            return
        task_id = self.val_sanity_progress_bar_id if trainer.sanity_checking else self.val_progress_bar_id
        self._update(task_id, batch_idx + 1)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.is_enabled and self.val_progress_bar_id is not None and trainer.state.fn == "fit":
            self._hide(self.val_progress_bar_id)
            self.refresh()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._update_metrics(trainer, pl_module)
        self.reset_dataloader_idx_tracker()

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_disabled or not self.has_dataloader_changed(dataloader_idx):
            return
        self.test_progress_bar_id = self._new_eval_task(
            self.test_progress_bar_id, self.total_test_batches_current_dataloader, self.test_description, True
        )
        self.refresh()

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_enabled:
            self._update(self.test_progress_bar_id, batch_idx + 1)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.reset_dataloader_idx_tracker()

    def on_predict_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_disabled or not self.has_dataloader_changed(dataloader_idx):
            return
        self.predict_progress_bar_id = self._new_eval_task(
            self.predict_progress_bar_id,
            self.total_predict_batches_current_dataloader,
            self.predict_description,
            True,
        )
        self.refresh()

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_enabled:
            self._update(self.predict_progress_bar_id, batch_idx + 1)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.reset_dataloader_idx_tracker()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stop_progress()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stop_progress()

    def __getstate__(self) -> dict[str, Any]:
        # the live display holds locks and the console a terminal: a pickled bar drops them
        state = self.__dict__.copy()
        state["progress"] = None
        state["_console"] = None
        state["_metric_component"] = None
        return state


__all__ = ["RichProgressBar", "RichProgressBarTheme"]
