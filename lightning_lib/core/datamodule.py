"""LightningDataModule: the data side of an experiment, with Lightning's hooks and state."""

from __future__ import annotations

from typing import Any

from lightning_lib.core.hooks import DataHooks
from lightning_lib.core.saving import HyperparametersMixin
from lightning_lib.utilities.model_helpers import register_hook_parent
from lightning_lib.utilities.parsing import AttributeDict


@register_hook_parent
class LightningDataModule(DataHooks, HyperparametersMixin):
    """Groups prepare_data, setup, the dataloaders and teardown for one dataset."""

    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"

    def __init__(self) -> None:
        self.trainer: Any = None
        self._hparams = AttributeDict()
        self._hparams_initial = AttributeDict()
        self._log_hyperparams = True

    def state_dict(self) -> dict[str, Any]:
        """State saved into checkpoints under the class's qualified name."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def on_exception(self, exception: BaseException) -> None:
        """Called when a run fails."""
