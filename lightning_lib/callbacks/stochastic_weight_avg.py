"""StochasticWeightAveraging: average the weights of the last epochs under an SWALR schedule.

From ``swa_epoch_start`` on, the optimizer's scheduler is replaced by ``torch.optim.swa_utils.SWALR`` and
the weights are folded into a running average at the start of every epoch. At the end the average
replaces the model's weights; a model with BatchNorm layers gets one more epoch, forward passes only, to
recompute the running statistics for the averaged weights (that epoch's one optimizer step uses the
gradients left from the last training batch, as Lightning's does, so the final weights match it).
The average, its count and the SWALR state are kept in the checkpoint: a fit resumed in the middle of
the averaging ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import SWALR

from lightning_lib.callbacks.callback import Callback
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.rank_zero import rank_zero_info, rank_zero_warn
from lightning_lib.utilities.types import LRSchedulerConfig

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

_AVG_FN = Callable[[Tensor, Tensor, Tensor], Tensor]
_CPU = torch.device("cpu")


def _has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class StochasticWeightAveraging(Callback):
    """Stochastic Weight Averaging (Izmailov et al., 2018) with ``torch.optim.swa_utils``' schedule.

    Args:
        swa_lrs: the SWA learning rate, one float for every param group or a list with one per group.
        swa_epoch_start: the epoch (1-based int) SWA starts at, or a fraction of ``max_epochs`` in [0, 1].
        annealing_epochs: epochs of the annealing phase of SWALR.
        annealing_strategy: ``"cos"`` or ``"linear"`` annealing.
        avg_fn: ``avg_fn(averaged, current, num_averaged)`` returning the new average; the equal-weight
            mean by default.
        device: where the averaged copy lives (``None``: the model's device).
    """

    def __init__(
        self,
        swa_lrs: float | list[float],
        swa_epoch_start: int | float = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: Literal["cos", "linear"] = "cos",
        avg_fn: _AVG_FN | None = None,
        device: torch.device | str | None = _CPU,
    ) -> None:
        start_error = "swa_epoch_start should be a >0 integer or a float between 0 and 1."
        if isinstance(swa_epoch_start, int) and swa_epoch_start < 1:
            raise MisconfigurationException(f"{start_error} Received {swa_epoch_start}.")
        if isinstance(swa_epoch_start, float) and not 0 <= swa_epoch_start <= 1:
            raise MisconfigurationException(f"{start_error} Received {swa_epoch_start}.")
        lrs_ok = (isinstance(swa_lrs, float) and swa_lrs > 0) or (
            isinstance(swa_lrs, list) and all(isinstance(lr, float) and lr > 0 for lr in swa_lrs)
        )
        if not lrs_ok:
            raise MisconfigurationException(
                f"The `swa_lrs` should a positive float, or a list of positive floats. Received {swa_lrs!r}."
            )
        if avg_fn is not None and not callable(avg_fn):
            raise MisconfigurationException(f"The `avg_fn` should be callable. Received {avg_fn!r}.")
        if device is not None and not isinstance(device, (torch.device, str)):
            raise MisconfigurationException(
                f"device is expected to be a torch.device or a str. Found {device}"
            )
        self.n_averaged: Tensor | None = None
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn or self.avg_fn
        self._device = device
        self._model_contains_batch_norm: bool | None = None
        self._average_model: LightningModule | None = None
        self._initialized = False
        self._swa_scheduler: Any = None
        self._scheduler_state: dict[str, Any] | None = None
        self._init_n_averaged = 0
        self._latest_update_epoch = -1
        self.momenta: dict[nn.modules.batchnorm._BatchNorm, float | None] = {}
        self._max_epochs: int = -1
        self._accumulate_grad_batches = 1

    @property
    def swa_start(self) -> int:
        """The first SWA epoch, 0-based."""
        assert isinstance(self._swa_epoch_start, int)
        return max(self._swa_epoch_start - 1, 0)

    @property
    def swa_end(self) -> int:
        """The last SWA epoch, 0-based (``inf`` with ``max_epochs=-1``)."""
        if self._max_epochs == -1:
            return float("inf")  # type: ignore[return-value]
        return self._max_epochs - 1

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: LightningModule) -> bool:
        """Whether ``pl_module`` has a BatchNorm layer (its statistics need the extra pass)."""
        return _has_batch_norm(pl_module)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # the copy is taken before the model moves to its device; the averaged weights live on `device`
        self._average_model = _detached_copy(pl_module)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException("SWA currently works with 1 `optimizer`.")
        if len(trainer.lr_scheduler_configs) > 1:
            raise MisconfigurationException("SWA currently not supported for more than 1 `lr_scheduler`.")
        max_epochs = trainer.max_epochs
        assert max_epochs is not None
        if isinstance(self._swa_epoch_start, float):
            if max_epochs == -1:
                raise MisconfigurationException(
                    "SWA with `swa_epoch_start` as a float is not supported when `max_epochs=-1`. "
                    "Please provide `swa_epoch_start` as an integer."
                )
            self._swa_epoch_start = int(max_epochs * self._swa_epoch_start)
        self._model_contains_batch_norm = _has_batch_norm(pl_module)
        self._max_epochs = max_epochs
        if self._model_contains_batch_norm and max_epochs != -1:
            # one more epoch, forward only, recomputes the BatchNorm statistics of the averaged weights
            trainer.fit_loop.max_epochs = max_epochs + 1
        if self._scheduler_state is not None and trainer.lr_scheduler_configs:
            # resumed inside SWA: the saved scheduler state is SWALR's, restored when SWALR is built
            # again; the user's scheduler must not receive it
            trainer.lr_scheduler_configs.clear()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        in_swa = self.swa_start <= epoch <= self.swa_end
        if not self._initialized and in_swa:
            self._initialized = True
            self._start_swa(trainer, pl_module)
        if in_swa and epoch > self._latest_update_epoch:
            assert self.n_averaged is not None and self._average_model is not None
            self.update_parameters(self._average_model, pl_module, self.n_averaged, self._avg_fn)
            self._latest_update_epoch = epoch
        # `==` rather than `>`: training continued past the end after a resume is not a BatchNorm pass
        if self._max_epochs != -1 and epoch == self.swa_end + 1:
            assert self._average_model is not None
            self.transfer_weights(self._average_model, pl_module)
            self.reset_batch_norm_and_save_state(pl_module)
            # forward passes only, and no optimizer step before the epoch's last batch
            loop = trainer.fit_loop
            loop.max_batches += 1
            loop._skip_backward = True
            self._accumulate_grad_batches = trainer.accumulate_grad_batches
            if not isinstance(loop.max_batches, int):
                raise MisconfigurationException(
                    "Expected a train dataloader with a length for the SWA BatchNorm pass, received one"
                    " without (iterable-style datasets are not supported)."
                )
            trainer.accumulate_grad_batches = loop.max_batches

    def _start_swa(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self._average_model is not None
        self._average_model = self._average_model.to(self._device or pl_module.device)
        optimizer = trainer.optimizers[0]
        if isinstance(self._swa_lrs, float):
            self._swa_lrs = [self._swa_lrs] * len(optimizer.param_groups)
        for lr, group in zip(self._swa_lrs, optimizer.param_groups):
            group["initial_lr"] = lr
        assert trainer.max_epochs is not None
        self._swa_scheduler = SWALR(
            optimizer,
            swa_lr=self._swa_lrs,  # type: ignore[arg-type]  # SWALR takes one per param group too
            anneal_epochs=self._annealing_epochs,
            anneal_strategy=self._annealing_strategy,
            last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1,
        )
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        elif trainer.current_epoch != self.swa_start:
            rank_zero_warn(
                "SWA is initializing after swa_start without any checkpoint data. "
                "This may be caused by loading a checkpoint from an older version of PyTorch Lightning."
            )
        swa_config = LRSchedulerConfig(self._swa_scheduler)
        configs = trainer.lr_scheduler_configs
        if configs:
            current = configs[0]
            if current.interval != "epoch" or current.frequency != 1:
                rank_zero_warn(f"SWA is currently only supported every epoch. Found {current}")
            rank_zero_info(
                f"Swapping scheduler `{current.scheduler.__class__.__name__}`"
                f" for `{self._swa_scheduler.__class__.__name__}`"
            )
            configs[0] = swa_config
        else:
            configs.append(swa_config)
        if self.n_averaged is None:
            self.n_averaged = torch.tensor(self._init_n_averaged, dtype=torch.long, device=pl_module.device)

    def on_train_epoch_end(self, trainer: Trainer, *args: Any) -> None:
        trainer.fit_loop._skip_backward = False

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # current_epoch has already moved past the last epoch here
        last = trainer.current_epoch - 1
        if self._model_contains_batch_norm and self._max_epochs != -1 and last == self.swa_end + 1:
            trainer.accumulate_grad_batches = self._accumulate_grad_batches
            trainer.fit_loop.max_batches -= 1
            max_epochs = trainer.fit_loop.max_epochs
            assert max_epochs is not None
            trainer.fit_loop.max_epochs = max_epochs - 1
            self.reset_momenta()
        elif (last == self.swa_end or self._max_epochs == -1) and self._average_model is not None:
            self.transfer_weights(self._average_model, pl_module)

    @staticmethod
    def transfer_weights(src_pl_module: nn.Module, dst_pl_module: nn.Module) -> None:
        """Copy the parameters of ``src_pl_module`` into ``dst_pl_module`` (on its devices)."""
        with torch.no_grad():
            for src, dst in zip(src_pl_module.parameters(), dst_pl_module.parameters()):
                dst.copy_(src.to(dst.device))

    def reset_batch_norm_and_save_state(self, pl_module: LightningModule) -> None:
        """Reset the BatchNorm statistics and switch to a cumulative average (momentum ``None``)."""
        self.momenta = {}
        for module in pl_module.modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean = torch.zeros_like(module.running_mean, device=pl_module.device)
            module.running_var = torch.ones_like(module.running_var, device=pl_module.device)
            self.momenta[module] = module.momentum
            module.momentum = None
            assert module.num_batches_tracked is not None
            module.num_batches_tracked *= 0

    def reset_momenta(self) -> None:
        """Give the BatchNorm layers their momentum back after the statistics pass."""
        for module, momentum in self.momenta.items():
            module.momentum = momentum

    @staticmethod
    def update_parameters(
        average_model: nn.Module, model: nn.Module, n_averaged: Tensor, avg_fn: _AVG_FN
    ) -> None:
        """Fold ``model``'s parameters into ``average_model`` and count it in ``n_averaged``."""
        with torch.no_grad():
            for averaged, current in zip(average_model.parameters(), model.parameters()):
                target = averaged.device
                value = current.detach().to(target)
                if n_averaged != 0:
                    value = avg_fn(averaged.detach(), value, n_averaged.to(target))
                averaged.copy_(value)
        n_averaged += 1

    @staticmethod
    def avg_fn(averaged_model_parameter: Tensor, model_parameter: Tensor, num_averaged: Tensor) -> Tensor:
        """The equal-weight running mean."""
        return averaged_model_parameter + (model_parameter - averaged_model_parameter) / (num_averaged + 1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_averaged": 0 if self.n_averaged is None else self.n_averaged.item(),
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_state": None if self._swa_scheduler is None else self._swa_scheduler.state_dict(),
            "average_model_state": None if self._average_model is None else self._average_model.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._init_n_averaged = state_dict["n_averaged"]
        self._latest_update_epoch = state_dict["latest_update_epoch"]
        self._scheduler_state = state_dict["scheduler_state"]
        if self._average_model is not None and state_dict["average_model_state"] is not None:
            self._average_model.load_state_dict(state_dict["average_model_state"])


def _detached_copy(pl_module: LightningModule) -> LightningModule:
    """A deep copy of the module's weights and structure without its trainer."""
    trainer = pl_module.__dict__.get("_trainer")
    if trainer is None:
        return deepcopy(pl_module)
    # the copy would otherwise drag the whole Trainer (loaders, loggers, writer threads) along
    pl_module.__dict__["_trainer"] = None
    try:
        return deepcopy(pl_module)
    finally:
        pl_module.__dict__["_trainer"] = trainer
