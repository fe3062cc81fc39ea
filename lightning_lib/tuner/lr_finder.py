"""The learning rate range test (Lightning's ``tuner.lr_finder``).

The learning rate grows from ``min_lr`` to ``max_lr`` over ``num_training`` optimizer steps, linearly or
exponentially, while the smoothed training loss is recorded; the suggestion is the learning rate where
that loss falls fastest. The model, the optimizer and the Trainer are put back as they were afterwards.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from lightning_lib.callbacks.callback import Callback
from lightning_lib.tuner._session import (
    forget_loaders,
    quiet_trainer,
    restore_state,
    run_training,
    save_state,
)
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.parsing import lightning_hasattr, lightning_setattr
from lightning_lib.utilities.rank_zero import rank_zero_warn
from lightning_lib.utilities.types import LRSchedulerConfig

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

log = logging.getLogger(__name__)

_LR_ATTR_NAMES = ("lr", "learning_rate")


def _determine_lr_attr_name(model: LightningModule, attr_name: str = "") -> str:
    """The attribute (on the model, its hparams or the datamodule) that holds the learning rate."""
    if attr_name:
        if not lightning_hasattr(model, attr_name):
            raise AttributeError(
                f"The attribute name for the learning rate was set to {attr_name}, but"
                " could not find this as a field in `model` or `model.hparams`."
            )
        return attr_name
    for attr in _LR_ATTR_NAMES:
        if lightning_hasattr(model, attr):
            return attr
    raise AttributeError(
        "When using the learning rate finder, either `model` or `model.hparams` should"
        f" have one of these fields: {_LR_ATTR_NAMES}. If your model has a different name for the learning rate,"
        " set it with `.lr_find(attr_name=...)`."
    )


class _LRFinder:
    """The result of a learning rate range test: ``results`` (``"lr"`` and ``"loss"`` lists), the
    ``suggestion()`` and a ``plot()`` of loss against learning rate."""

    def __init__(self, mode: str, lr_min: float, lr_max: float, num_training: int) -> None:
        if mode not in ("linear", "exponential"):
            raise ValueError(f"Expected mode to be 'linear' or 'exponential', received {mode!r}.")
        self.mode = mode
        self.lr_min = lr_min
        self.lr_max = lr_max
        self.num_training = num_training
        self.results: dict[str, Any] = {}
        self._total_batch_idx = 0
        self._optimal_idx: int | None = None

    def _exchange_scheduler(self, trainer: Trainer) -> None:
        """Start every parameter group at ``lr_min`` and step it towards ``lr_max`` after each batch."""
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise MisconfigurationException(
                f"`model.configure_optimizers()` returned {len(optimizers)}, but"
                " learning rate finder only works with single optimizer"
            )
        optimizer = optimizers[0]
        for group in optimizer.param_groups:
            group["lr"] = self.lr_min
            group["initial_lr"] = self.lr_min
        schedule = _LinearLR if self.mode == "linear" else _ExponentialLR
        scheduler = schedule(optimizer, self.lr_max, self.num_training)
        trainer.lr_scheduler_configs = [LRSchedulerConfig(scheduler, interval="step")]

    def plot(self, suggest: bool = False, show: bool = False, ax: Any = None) -> Any:
        """Loss against learning rate (log scale in exponential mode); ``suggest`` marks the suggestion.

        Needs matplotlib, imported only here.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as err:
            raise MisconfigurationException(
                "To use the `plot` method, you must have Matplotlib installed."
                " Install it by running `pip install -U matplotlib`."
            ) from err
        lrs = self.results["lr"]
        losses = self.results["loss"]
        if ax is None:
            fig, ax = plt.subplots()
        else:
            fig = ax.figure
        ax.plot(lrs, losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest:
            self.suggestion()
            if self._optimal_idx:
                ax.plot(
                    lrs[self._optimal_idx], losses[self._optimal_idx], markersize=10, marker="o", color="red"
                )
        if show:
            plt.show()
        return fig

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The learning rate where the loss falls fastest (the most negative gradient of the loss with
        respect to the learning rate), leaving out the first ``skip_begin`` and last ``skip_end`` points
        and every non-finite loss; None, with an error logged, when fewer than two points are left."""
        window = slice(skip_begin, -skip_end)
        losses = torch.tensor(self.results["loss"][window])
        lrs = torch.tensor(self.results["lr"][window])
        finite = torch.isfinite(losses)
        losses = losses[finite]
        lrs = lrs[finite]
        if len(losses) < 2:
            log.error(
                "Failed to compute suggestion for learning rate because there are not enough points. Increase the loop"
                " iteration limits or the size of your dataset/dataloader."
            )
            self._optimal_idx = None
            return None
        # the spacing makes it d(loss)/d(lr) even where the learning rates are not evenly spaced
        gradients = torch.gradient(losses, spacing=[lrs])[0]
        steepest = int(torch.argmin(gradients).item())
        kept = torch.arange(len(self.results["loss"]))[window][finite]
        self._optimal_idx = int(kept[steepest].item())
        lr: float = self.results["lr"][self._optimal_idx]
        return lr


def _lr_find(
    trainer: Trainer,
    model: LightningModule,
    min_lr: float = 1e-8,
    max_lr: float = 1,
    num_training: int = 100,
    mode: str = "exponential",
    early_stop_threshold: float | None = 4.0,
    update_attr: bool = False,
    attr_name: str = "",
) -> _LRFinder | None:
    """Run the range test inside the current fit; with ``update_attr``, set the suggestion on the model's
    learning rate attribute and on the optimizer."""
    if trainer.fast_dev_run:
        rank_zero_warn("Skipping learning rate finder since `fast_dev_run` is enabled.")
        return None
    if update_attr:
        attr_name = _determine_lr_attr_name(model, attr_name)
    start_steps = trainer.global_step
    mid_fit = trainer._data.train_fetcher is not None
    saved = save_state(trainer)
    recorder = _LRCallback(num_training, early_stop_threshold)
    lr_finder = _LRFinder(mode, min_lr, max_lr, num_training)
    finished = False
    try:
        trainer.lr_scheduler_configs = []
        quiet_trainer(trainer, [recorder])
        trainer.max_steps = num_training + trainer.global_step
        trainer.limit_val_batches = num_training
        forget_loaders(trainer, "val")
        lr_finder._exchange_scheduler(trainer)
        run_training(trainer)
        if trainer.global_step != num_training + start_steps:
            log.info(f"LR finder stopped early after {trainer.global_step} steps due to diverging loss.")
        lr_finder.results.update({"lr": recorder.lrs, "loss": recorder.losses})
        lr_finder._total_batch_idx = trainer.fit_loop.total_batch_idx
        lr_finder.results = trainer.strategy.broadcast(lr_finder.results)
        finished = True
    finally:
        restore_state(trainer, saved)
        forget_loaders(trainer, "val")
        forget_loaders(trainer, "train")
        # the fit goes on with train loaders requested now (inside the RNG isolation), as after Lightning's
        # restore; from inside the fit loop, the epoch goes on with their fresh iterator
        trainer._data.setup_train_data()
        if mid_fit:
            fetcher = trainer._data.train_fetcher
            assert fetcher is not None
            fetcher.start()
    if update_attr and finished:
        lr = lr_finder.suggestion()
        if lr is not None:
            lightning_setattr(model, attr_name, lr)
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            log.info(f"Learning rate set to {lr}")
    return lr_finder


class _LRCallback(Callback):
    """Records the learning rate and the smoothed loss of each optimizer step of the range test, and
    stops it once the loss exceeds ``early_stop_threshold`` times the best loss so far."""

    def __init__(
        self, num_training: int, early_stop_threshold: float | None = 4.0, beta: float = 0.98
    ) -> None:
        self.num_training = num_training
        self.early_stop_threshold = early_stop_threshold
        self.beta = beta
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.avg_loss = 0.0
        self.best_loss = 0.0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if (trainer.fit_loop.batch_idx + 1) % trainer.accumulate_grad_batches != 0:
            return
        self.lrs.append(trainer.lr_scheduler_configs[0].scheduler.lr[0])

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (trainer.fit_loop.batch_idx + 1) % trainer.accumulate_grad_batches != 0:
            return
        if not outputs:  # training_step returned None: the step was skipped
            self.losses.append(float("nan"))
            return
        loss = outputs if isinstance(outputs, torch.Tensor) else outputs["loss"]
        current_loss = loss.item()
        step = trainer.global_step
        self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * current_loss
        smoothed = self.avg_loss / (1 - self.beta ** (step + 1))
        if (
            self.early_stop_threshold is not None
            and step > 1
            and smoothed > self.early_stop_threshold * self.best_loss
        ):
            trainer.should_stop = True
        trainer.should_stop = trainer.strategy.broadcast(trainer.should_stop)
        if smoothed < self.best_loss or step == 1:
            self.best_loss = smoothed
        self.losses.append(smoothed)


class _RangeLR(LRScheduler):
    """From each group's base learning rate to ``end_lr`` in ``num_iter`` steps (the range test's sweep)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, end_lr: float, num_iter: int, last_epoch: int = -1
    ) -> None:
        self.end_lr = end_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def _at(self, base: Any, ratio: float) -> Any:
        raise NotImplementedError

    def get_lr(self) -> list[Any]:
        ratio = (self.last_epoch + 1) / self.num_iter
        if self.last_epoch > 0:
            values = [self._at(base, ratio) for base in self.base_lrs]
        else:
            values = list[Any](self.base_lrs)
        self._lr = values
        return values

    @property
    def lr(self) -> list[Any]:
        return self._lr


class _LinearLR(_RangeLR):
    """Equal steps from the base learning rate to ``end_lr``."""

    def _at(self, base: Any, ratio: float) -> Any:
        return base + ratio * (self.end_lr - base)


class _ExponentialLR(_RangeLR):
    """Equal ratios from the base learning rate to ``end_lr``."""

    def _at(self, base: Any, ratio: float) -> Any:
        return base * (self.end_lr / base) ** ratio


__all__ = ["_LRFinder"]
