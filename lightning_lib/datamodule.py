"""LightningDataModule: the data side of an experiment, with Lightning's hooks and state."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from lightning_lib.hparams import AttributeDict, collect_init_args, copy_hparams, select_hparams


class LightningDataModule:
    """Groups prepare_data, setup, the dataloaders and teardown for one dataset."""

    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"

    prepare_data_per_node: bool = True
    allow_zero_length_dataloader_with_multiple_devices: bool = False

    def __init__(self) -> None:
        self.trainer: Any = None
        self._hparams = AttributeDict()
        self._hparams_initial = AttributeDict()
        self._log_hyperparams = True

    def prepare_data(self) -> None:
        """Download or write data once per node; do not set state here."""

    def setup(self, stage: str) -> None:
        """Build datasets for ``stage`` ("fit", "validate", "test" or "predict")."""

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built."""

    def train_dataloader(self) -> Any:
        raise NotImplementedError("`train_dataloader` must be implemented to be used with `Trainer.fit`")

    def val_dataloader(self) -> Any:
        raise NotImplementedError("`val_dataloader` must be implemented to be used with `Trainer.validate`")

    def test_dataloader(self) -> Any:
        raise NotImplementedError("`test_dataloader` must be implemented to be used with `Trainer.test`")

    def predict_dataloader(self) -> Any:
        raise NotImplementedError(
            "`predict_dataloader` must be implemented to be used with `Trainer.predict`"
        )

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        from lightning_lib.move import move_to_device

        return move_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def state_dict(self) -> dict[str, Any]:
        """State saved into checkpoints under the class's qualified name."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def on_exception(self, exception: BaseException) -> None:
        """Called when a run fails."""

    def save_hyperparameters(
        self, *args: Any, ignore: str | Iterable[str] | None = None, frame: Any = None, logger: bool = True
    ) -> None:
        """Record the ``__init__`` arguments (or the named ones) in ``self.hparams``."""
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        init_args = collect_init_args(frame, self) if frame is not None else {}
        self._log_hyperparams = logger
        self._hparams.update(select_hparams(init_args, args, ignore))
        self._hparams_initial = copy_hparams(self._hparams)

    @property
    def hparams(self) -> AttributeDict:
        return self._hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        return copy_hparams(self._hparams_initial)
