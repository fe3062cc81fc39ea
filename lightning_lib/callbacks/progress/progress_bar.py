"""The ``ProgressBar`` base class: totals per loop and the metrics a bar shows."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer


class ProgressBar(Callback):
    """Base class for progress bars: tracks totals per loop and collects the metrics to show.

    Subclasses implement :meth:`disable` and :meth:`enable`; the trainer disables the bar on
    non-zero ranks and around internal runs.
    """

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._current_eval_dataloader_idx: int | None = None
        self._warned_duplicates = False

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise TypeError(f"The `{self.__class__.__name__}._trainer` reference has not been set yet.")
        return self._trainer

    @property
    def sanity_check_description(self) -> str:
        return "Sanity Checking"

    @property
    def train_description(self) -> str:
        return "Training"

    @property
    def validation_description(self) -> str:
        return "Validation"

    @property
    def test_description(self) -> str:
        return "Testing"

    @property
    def predict_description(self) -> str:
        return "Predicting"

    @property
    def total_train_batches(self) -> int | float:
        """Batches in this training epoch (``inf`` for an infinite loader), capped by ``max_steps``."""
        trainer = self.trainer
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            return min(trainer.num_training_batches, trainer.max_steps - trainer.global_step)
        return trainer.num_training_batches

    def _current(self, batches: Any) -> int | float:
        if isinstance(batches, list):
            assert self._current_eval_dataloader_idx is not None
            return batches[self._current_eval_dataloader_idx]
        return batches

    @property
    def total_val_batches_current_dataloader(self) -> int | float:
        trainer = self.trainer
        return self._current(
            trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        )

    @property
    def total_test_batches_current_dataloader(self) -> int | float:
        return self._current(self.trainer.num_test_batches)

    @property
    def total_predict_batches_current_dataloader(self) -> int | float:
        return self._current(self.trainer.num_predict_batches)

    @property
    def total_val_batches(self) -> int | float:
        """Validation batches over all loaders if validation runs at the end of this epoch, else 0."""
        trainer = self.trainer
        every = trainer.check_val_every_n_epoch
        if not trainer.enable_validation or (every is not None and (trainer.current_epoch + 1) % every):
            return 0
        batches = trainer.num_val_batches
        return sum(batches) if isinstance(batches, list) else batches

    def has_dataloader_changed(self, dataloader_idx: int) -> bool:
        old, self._current_eval_dataloader_idx = self._current_eval_dataloader_idx, dataloader_idx
        return old != dataloader_idx

    def reset_dataloader_idx_tracker(self) -> None:
        self._current_eval_dataloader_idx = None

    @property
    def is_enabled(self) -> bool:
        return True

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        raise NotImplementedError

    def enable(self) -> None:
        raise NotImplementedError

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print without breaking the bars."""
        print(*args, **kwargs)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer
        if not trainer.is_global_zero:
            self.disable()

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The items shown in the bar: ``v_num`` plus the metrics logged with ``prog_bar=True``.

        Override to change them, e.g. ``items = super().get_metrics(...); items.pop("v_num", None)``.
        """
        standard = get_standard_metrics(trainer)
        metrics = trainer.progress_bar_metrics
        duplicates = standard.keys() & metrics.keys()
        if duplicates and not self._warned_duplicates:
            self._warned_duplicates = True
            name = sorted(duplicates)[0]
            warnings.warn(
                f"The progress bar already tracks a metric with the name(s) '{', '.join(sorted(duplicates))}'"
                f" and `self.log('{name}', ..., prog_bar=True)` will overwrite this value. If this is"
                " undesired, change the name or override `get_metrics()` in the progress bar callback.",
                stacklevel=2,
            )
        return {**standard, **metrics}


def get_standard_metrics(trainer: Trainer) -> dict[str, int | str]:
    """``{"v_num": version}`` of the loggers (last 4 characters of a string version), else ``{}``."""
    loggers = trainer.loggers
    if not loggers:
        return {}
    if len(loggers) == 1:
        version = loggers[0].version
    else:
        version = "_".join(dict.fromkeys(str(logger.version) for logger in loggers))
    if version in ("", None):
        return {}
    return {"v_num": version[-4:] if isinstance(version, str) else version}
