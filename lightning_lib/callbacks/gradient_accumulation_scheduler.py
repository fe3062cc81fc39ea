"""``GradientAccumulationScheduler``: change ``accumulate_grad_batches`` by epoch.

The fit loop reads ``trainer.accumulate_grad_batches`` when an epoch starts, after the
``on_train_epoch_start`` hooks, so setting it there changes the accumulation of that whole epoch; the
epoch's last batch always steps the optimizer, whatever is left of its window.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer


class GradientAccumulationScheduler(Callback):
    """Accumulate gradients over ``scheduling[epoch]`` batches from each listed epoch on (0-based).

    Epochs before the first key accumulate 1 batch (a ``{0: 1}`` entry is added). Example:
    ``GradientAccumulationScheduler(scheduling={4: 2})`` steps every batch for epochs 0-3, then every
    2 batches. The Trainer's own ``accumulate_grad_batches`` must stay 1.

    Args:
        scheduling: ``{epoch: accumulation_factor}``.
    """

    def __init__(self, scheduling: dict[int, int]) -> None:
        super().__init__()
        if not scheduling:
            raise TypeError("Empty dict cannot be interpreted correct")
        # Lightning raises MisconfigurationException for the two checks below
        if any(not isinstance(key, int) or key < 0 for key in scheduling):
            raise ValueError(
                f"Epoch should be an int greater than or equal to 0. Got {list(scheduling.keys())}."
            )
        if any(not isinstance(value, int) or value < 1 for value in scheduling.values()):
            raise ValueError(
                f"Accumulation factor should be an int greater than 0. Got {list(scheduling.values())}."
            )
        if min(scheduling) != 0:
            scheduling.update({0: 1})  # Lightning updates the given dict in place
        self.scheduling = scheduling
        self.epochs = sorted(scheduling)

    def going_to_accumulate_grad_batches(self) -> bool:
        """Whether any epoch accumulates more than one batch."""
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        """The accumulation factor of ``epoch``."""
        factor = 1
        for start in reversed(self.epochs):
            if epoch >= start:
                factor = self.scheduling[start]
                break
        return factor

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not pl_module.automatic_optimization:
            raise RuntimeError(
                "Automatic gradient accumulation and the `GradientAccumulationScheduler` is not supported for"
                " manual optimization. Please remove the callback or switch to automatic optimization."
            )
        if self.going_to_accumulate_grad_batches() and (
            _overrides(pl_module, "optimizer_step") or _overrides(pl_module, "optimizer_zero_grad")
        ):
            warnings.warn(
                "When using `Trainer(accumulate_grad_batches != 1)` and overriding"
                " `LightningModule.optimizer_{step,zero_grad}`, the hooks will not be called on every batch"
                " (rather, they are called on every optimization step).",
                UserWarning,
                stacklevel=2,
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "You have set `accumulate_grad_batches` and are using the `GradientAccumulationScheduler`"
                " callback. Either remove `accumulate_grad_batches` from the Trainer or remove the callback."
            )
        # A fit resumed in the middle of an epoch starts without that epoch's on_train_epoch_start: set
        # its factor now so the rest of the epoch accumulates as the interrupted run did.
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)

    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)


def _overrides(module: LightningModule, name: str) -> bool:
    from lightning_lib.core.module import LightningModule

    impl = getattr(type(module), name, None)
    return name in vars(module) or impl is not getattr(LightningModule, name)
