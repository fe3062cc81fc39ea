"""``BasePredictionWriter``: write predictions as ``trainer.predict`` makes them, per batch or per epoch."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from lightning_lib.callbacks.callback import Callback
from lightning_lib.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer


class WriteInterval(str, Enum):
    """When a prediction writer writes: after each batch, once at the end, or both."""

    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


class BasePredictionWriter(Callback):
    """Subclass and implement ``write_on_batch_end`` and/or ``write_on_epoch_end`` to store predictions.

    ``batch_indices`` are the dataset indices of the samples in a batch (per batch), or per dataloader a
    list of them (per epoch); they are known for plain ``DataLoader``s, whose batch sampler the predict
    loop records. With ``write_interval="epoch"`` the predictions are kept until the end even when
    ``trainer.predict(return_predictions=False)``.

    Args:
        write_interval: "batch", "epoch" or "batch_and_epoch".
    """

    def __init__(self, write_interval: Literal["batch", "epoch", "batch_and_epoch"] = "batch") -> None:
        choices = [i.value for i in WriteInterval]
        if write_interval not in choices:
            raise MisconfigurationException(
                f"`write_interval` should be one of {choices}. Received {write_interval!r}."
            )
        self.interval = WriteInterval(write_interval)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        params = inspect.signature(pl_module.predict_step).parameters
        if "dataloader_iter" in params:
            raise NotImplementedError(
                "The `PredictionWriterCallback` does not support using `dataloader_iter`."
            )

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Override with the logic to write a single batch."""
        raise NotImplementedError()

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Override with the logic to write all batches."""
        raise NotImplementedError()

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.interval.on_batch:
            return
        batch_indices = trainer.predict_loop.current_batch_indices
        self.write_on_batch_end(trainer, pl_module, outputs, batch_indices, batch, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.interval.on_epoch:
            return
        loop = trainer.predict_loop
        self.write_on_epoch_end(trainer, pl_module, loop.predictions, loop.epoch_batch_indices)
