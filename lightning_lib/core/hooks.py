"""The data hooks a LightningModule and a LightningDataModule share (Lightning's ``DataHooks``)."""

from __future__ import annotations

from typing import Any

from lightning_lib.utilities.apply_func import move_to_device
from lightning_lib.utilities.exceptions import MisconfigurationException


class DataHooks:
    """prepare_data, setup/teardown, the four dataloaders and the batch-transfer hooks."""

    prepare_data_per_node: bool = True
    allow_zero_length_dataloader_with_multiple_devices: bool = False

    def prepare_data(self) -> None:
        """Download or write data once per node; do not set state here."""

    def setup(self, stage: str) -> None:
        """Build what ``stage`` ("fit", "validate", "test" or "predict") needs."""

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built."""

    def train_dataloader(self) -> Any:
        raise MisconfigurationException(
            "`train_dataloader` must be implemented to be used with the Lightning Trainer"
        )

    def val_dataloader(self) -> Any:
        raise MisconfigurationException(
            "`val_dataloader` must be implemented to be used with the Lightning Trainer"
        )

    def test_dataloader(self) -> Any:
        raise MisconfigurationException(
            "`test_dataloader` must be implemented to be used with the Lightning Trainer"
        )

    def predict_dataloader(self) -> Any:
        raise MisconfigurationException(
            "`predict_dataloader` must be implemented to be used with the Lightning Trainer"
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch
