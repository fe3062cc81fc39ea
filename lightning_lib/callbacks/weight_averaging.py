"""WeightAveraging and EMAWeightAveraging: an averaged copy of the model, updated during training.

The copy is a ``torch.optim.swa_utils.AveragedModel`` (parameters and, by default, buffers). It is
updated after optimizer steps and training epochs for which ``should_update`` says so; its weights
stand in for the model's during validation and replace them when training ends. A checkpoint holds
the averaged weights as its ``state_dict`` (what a user loading it for inference wants), the trained
weights as ``current_model_state`` and the averager's own buffers (``n_averaged``) as
``averaging_state``; resuming puts both back.
"""

from __future__ import annotations

import itertools
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from lightning_lib.callbacks.callback import Callback
from lightning_lib.utilities.model_helpers import is_overridden
from lightning_lib.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

_MODULE_PREFIX = "module."


class WeightAveraging(Callback):
    """Keep an averaged model (SWA by default) updated after every optimizer step.

    Args:
        device: where the averaged model lives; the model's device when ``None``.
        use_buffers: average the buffers (BatchNorm statistics) too; ``True`` unlike ``AveragedModel``.
        **kwargs: passed on to ``AveragedModel`` (``avg_fn``, ``multi_avg_fn``).

    Override :meth:`should_update` to choose when the average is updated.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        **kwargs: Any,
    ) -> None:
        self._device: torch.device | int | None = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: AveragedModel | None = None
        self._latest_update_step = 0
        self._latest_update_epoch = -1

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Whether to update the average after optimizer step ``step_idx`` or epoch ``epoch_idx`` (0-based).

        One of the two is given. The default updates after every optimizer step.
        """
        return step_idx is not None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if is_overridden("configure_model", pl_module):
            rank_zero_warn(
                "You're using the WeightAveraging callback with a model that overrides the configure_model "
                "callback. WeightAveraging doesn't support sharding model layers, so you may run out of memory."
            )
            pl_module.configure_model()
        device = self._device or pl_module.device
        trainer_ref = pl_module.__dict__.get("_trainer")
        # AveragedModel deep-copies the module; the Trainer attached to it must not come along
        pl_module.__dict__["_trainer"] = None
        try:
            self._average_model = AveragedModel(
                model=pl_module, device=device, use_buffers=self._use_buffers, **self._kwargs
            )
        finally:
            pl_module.__dict__["_trainer"] = trainer_ref

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # global_step moves only when the optimizer stepped: accumulating batches do not update
        step = trainer.global_step
        if step > self._latest_update_step and self.should_update(step_idx=step - 1):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self._average_model is not None
        self._copy_average_to_current(pl_module)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:
            rank_zero_info(
                "You're using the WeightAveraging callback, but saving a checkpoint outside the 'fit' stage. The state "
                "of the WeightAveraging callback won't be saved in the checkpoint. If training has finished, the "
                "average model parameters will be saved to the state_dict in the checkpoint."
            )
            return
        averaged = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {
            name[len(_MODULE_PREFIX) :]: value
            for name, value in averaged.items()
            if name.startswith(_MODULE_PREFIX)
        }
        checkpoint["averaging_state"] = {
            name: value for name, value in averaged.items() if not name.startswith(_MODULE_PREFIX)
        }

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:
            rank_zero_warn(
                "You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage. The "
                "WeightAveraging state cannot be restored. If you're using the checkpoint for prediction or testing, "
                "you can ignore this warning. To disable the warning, remove the WeightAveraging callback."
            )
        elif "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            rank_zero_info(
                "Found current_model_state in the checkpoint. This will be used to initialize the model."
            )
            averaged = {_MODULE_PREFIX + name: value for name, value in checkpoint["state_dict"].items()}
            averaged.update(checkpoint["averaging_state"])
            self._average_model.load_state_dict(averaged)
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:
            rank_zero_warn(
                "The checkpoint was not created with WeightAveraging. Both the current and the average model will be "
                "initialized with state_dict."
            )
            self._average_model.module.load_state_dict(deepcopy(checkpoint["state_dict"]), strict=False)

    def _pairs(self, pl_module: LightningModule) -> Any:
        assert self._average_model is not None
        averaged = self._average_model.module
        return zip(
            itertools.chain(averaged.parameters(), averaged.buffers()),
            itertools.chain(pl_module.parameters(), pl_module.buffers()),
        )

    def _swap_models(self, pl_module: LightningModule) -> None:
        """Exchange the values of the averaged and the trained weights (and buffers)."""
        for average, current in self._pairs(pl_module):
            held = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(held)

    def _copy_average_to_current(self, pl_module: LightningModule) -> None:
        """Give the model the averaged weights (and buffers)."""
        for average, current in self._pairs(pl_module):
            current.data.copy_(average.data)


class EMAWeightAveraging(WeightAveraging):
    """Exponential moving average of the weights, ``decay`` per update.

    Args:
        decay: weight of the previous average in each update.
        update_every_n_steps: update after every n-th optimizer step (0 or less: never after steps).
        update_starting_at_step: first optimizer step (0-based) that updates; all when ``None``.
        update_starting_at_epoch: from this epoch (0-based) on, also update at every epoch end.
        device, use_buffers, **kwargs: as for :class:`WeightAveraging`.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(device=device, use_buffers=use_buffers, **kwargs, avg_fn=get_ema_avg_fn(decay=decay))
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is not None:
            started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            due = self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0
            if started and due:
                return True
        return (
            epoch_idx is not None
            and self.update_starting_at_epoch is not None
            and epoch_idx >= self.update_starting_at_epoch
        )
