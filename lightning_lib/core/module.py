"""LightningModule: an ``nn.Module`` with Lightning's hooks, logging and optimizer access."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_lib.core.hooks import DataHooks
from lightning_lib.core.saving import HyperparametersMixin
from lightning_lib.loop.results import (
    as_log_tensor,
    is_metric_object,
    resolve_logging_levels,
    resolve_reduce_fx,
    warn_once,
)
from lightning_lib.utilities.apply_func import apply_to_tensors
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.model_helpers import register_hook_parent
from lightning_lib.utilities.parsing import AttributeDict

if TYPE_CHECKING:
    from lightning_lib.core.optimizer import LightningOptimizer
    from lightning_lib.trainer import Trainer


@register_hook_parent
class LightningModule(DataHooks, HyperparametersMixin, nn.Module):
    """Organises a PyTorch model's training, evaluation and prediction code."""

    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"

    # Plain attributes kept out of nn.Module's parameter/buffer/submodule bookkeeping.
    _trainer: Trainer | None
    _current_fx_name: str | None
    _automatic_optimization: bool
    _hparams: AttributeDict
    _hparams_initial: AttributeDict
    _log_options_cache: dict[tuple[Any, ...], tuple[Any, ...]]
    _warned: set[str]
    _toggled_requires_grad: dict[int, bool] | None
    _example_input_array: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Written through __dict__ so that the hot path avoids nn.Module.__setattr__'s bookkeeping.
        self.__dict__["_trainer"] = None
        self.__dict__["_current_fx_name"] = None
        self.__dict__["_automatic_optimization"] = True
        self.__dict__["_hparams"] = AttributeDict()
        self.__dict__["_hparams_initial"] = AttributeDict()
        self.__dict__["_log_options_cache"] = {}
        self.__dict__["_warned"] = set()
        self.__dict__["_toggled_requires_grad"] = None
        self.__dict__["_example_input_array"] = None

    # ---- trainer-provided context ------------------------------------------------------------------
    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError(f"{self.__class__.__qualname__} is not attached to a `Trainer`.")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        self.__dict__["_trainer"] = trainer

    @property
    def device(self) -> torch.device:
        for param in self.parameters():
            return param.device
        for buffer in self.buffers():
            return buffer.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            return tensor.dtype
        return torch.get_default_dtype()

    @property
    def automatic_optimization(self) -> bool:
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self.__dict__["_automatic_optimization"] = bool(value)

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def logger(self) -> Any:
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Any]:
        return self._trainer.loggers if self._trainer is not None else []

    @property
    def example_input_array(self) -> Any:
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, value: Any) -> None:
        self.__dict__["_example_input_array"] = value

    # ---- hyper-parameters --------------------------------------------------------------------------
    # ---- logging -----------------------------------------------------------------------------------
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Log a scalar for the loggers, callbacks and progress bar (Lightning's semantics)."""
        trainer = self._trainer
        if trainer is None:
            warn_once(
                self._warned,
                "You are trying to `self.log()` but the `self.trainer` reference is not registered on the model"
                " yet. This is most likely because the model hasn't been passed to the `Trainer`; ignored.",
            )
            return
        if trainer.barebones:
            warnings.warn(
                "You are trying to `self.log()` but `Trainer(barebones=True)` is configured. Logging can impact"
                " raw speed so it is disabled under this setting.",
                stacklevel=2,
            )
            return
        fx = self._current_fx_name
        if fx is None:
            raise MisconfigurationException(
                f"You are trying to `self.log({name!r}, ...)` but it is not managed by the `Trainer` control flow:"
                " log from a step or epoch hook."
            )
        cache_key = (fx, name, prog_bar, logger, on_step, on_epoch, reduce_fx, add_dataloader_idx)
        options = self._log_options_cache.get(cache_key)
        if options is None:
            if add_dataloader_idx and "/dataloader_idx_" in name:
                raise MisconfigurationException(
                    f"You called `self.log` with the key `{name}` but it should not contain information about"
                    " `dataloader_idx` when `add_dataloader_idx=True`: expected a name without"
                    f" '/dataloader_idx_', received {name!r}."
                )
            resolved_step, resolved_epoch = resolve_logging_levels(fx, name, on_step, on_epoch)
            reduce = resolve_reduce_fx(name, reduce_fx)
            if logger and trainer.logger is None:
                warn_once(
                    self._warned,
                    f"You called `self.log({name!r}, ..., logger=True)` but have no logger configured. You can"
                    " enable one by doing `Trainer(logger=ALogger(...))`",
                )
            options = (
                prog_bar,
                True if logger is None else logger,
                resolved_step,
                resolved_epoch,
                reduce,
                add_dataloader_idx,
            )
            self._log_options_cache[cache_key] = options
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"Expected `self.log({name!r}, batch_size=...)` >= 1, received {batch_size!r}.")
        tensor = as_log_tensor(name, value, None if isinstance(value, Tensor) else self.device, self._warn)
        if metric_attribute is None and not isinstance(tensor, Tensor):
            self._metric_attribute_of(name, tensor)
        if sync_dist and not rank_zero_only:  # a rank-zero-only value has no peers to reduce with
            tensor = trainer.strategy.reduce(tensor, reduce_op=options[4])
        results = trainer._logger_connector.results_for_stage()
        if results is None:
            raise MisconfigurationException(
                f"You are trying to `self.log({name!r}, ...)` but the loop's result collection is not registered"
                " yet: no Trainer stage is running."
            )
        results.log(fx, name, tensor, options, add_dataloader_idx, batch_size)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """``self.log`` for each item of a mapping."""
        for key, val in dictionary.items():
            self.log(
                key,
                val,
                prog_bar=prog_bar,
                logger=logger,
                on_step=on_step,
                on_epoch=on_epoch,
                reduce_fx=reduce_fx,
                enable_graph=enable_graph,
                sync_dist=sync_dist,
                sync_dist_group=sync_dist_group,
                add_dataloader_idx=add_dataloader_idx,
                batch_size=batch_size,
                rank_zero_only=rank_zero_only,
            )

    def _warn(self, message: str) -> None:
        warn_once(self._warned, message)

    def _metric_attribute_of(self, name: str, metric: Any) -> str:
        """The attribute holding a logged torchmetrics Metric: its state is saved and restored through it."""
        found: dict[int, str] | None = self.__dict__.get("_metric_attributes")
        if found is None or id(metric) not in found:  # looked up again only for a metric not seen yet
            found = {id(module): attr for attr, module in self.named_modules() if is_metric_object(module)}
            self.__dict__["_metric_attributes"] = found
        if not found:
            raise MisconfigurationException(
                "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged as"
                f" {name!r}. You can fix this by setting an attribute for the metric in your `LightningModule`."
            )
        attribute = found.get(id(metric))
        if attribute is None:
            raise MisconfigurationException(
                "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged. You can fix"
                f" this by calling `self.log({name}, ..., metric_attribute=name)` where `name` is one of"
                f" {list(found.values())}"
            )
        return attribute

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the global-zero process only."""
        trainer = self._trainer
        if trainer is None:
            print(*args, **kwargs)
        elif trainer.is_global_zero:
            bar = trainer.progress_bar_callback
            # through the bar, so a live bar is not garbled
            (bar.print if bar is not None and hasattr(bar, "print") else print)(*args, **kwargs)

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather tensors from every process; one process returns its data with a leading dim of 1."""
        if self._trainer is None:
            return data
        # numbers become tensors and every tensor moves to this module's device, as in Lightning
        device = self.device
        data = apply_to_tensors(_numbers_as_tensors(data), lambda t: t.to(device))
        return self._trainer.strategy.all_gather(data, group=group, sync_grads=sync_grads)

    # ---- steps -------------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return super().forward(*args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("`training_step` must be implemented to be used with the Lightning Trainer")

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def predict_step(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        return self(batch)

    def configure_optimizers(self) -> Any:
        raise NotImplementedError(
            "`configure_optimizers` must be implemented to be used with the Lightning Trainer"
        )

    def configure_callbacks(self) -> Any:
        return []

    # ---- optimization ------------------------------------------------------------------------------
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer(s) from ``configure_optimizers``: one object if there is one, else a list."""
        trainer = self.trainer
        opts: list[Any] = trainer.strategy._lightning_optimizers if use_pl_optimizer else trainer.optimizers
        return opts[0] if len(opts) == 1 else opts

    def lr_schedulers(self) -> Any:
        """The scheduler(s) from ``configure_optimizers``: None, one object, or a list."""
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        schedulers = [config.scheduler for config in configs]
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward with the precision's scaling and the backward hooks, for manual optimization."""
        if self.automatic_optimization:
            raise RuntimeError(
                "`manual_backward` can only be used with manual optimization; set `self.automatic_optimization = False`."
            )
        from lightning_lib.loop.step import backward

        backward(self.trainer, loss, None, *args, **kwargs)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward(*args, **kwargs)

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Freeze every parameter that ``optimizer`` does not own, remembering the previous state."""
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        previous: dict[int, bool] = {}
        for param in self.parameters():
            previous[id(param)] = param.requires_grad
            if id(param) not in owned:
                param.requires_grad = False
        self.__dict__["_toggled_requires_grad"] = previous

    def untoggle_optimizer(self, optimizer: Any) -> None:
        """Undo :meth:`toggle_optimizer`."""
        previous = self._toggled_requires_grad or {}
        for param in self.parameters():
            if id(param) in previous:
                param.requires_grad = previous[id(param)]
        self.__dict__["_toggled_requires_grad"] = None

    @contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Iterator[None]:
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def clip_gradients(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients of ``optimizer``'s parameters by norm or value."""
        from lightning_lib.loop.step import clip_gradients

        clip_gradients(self.trainer, optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        self.clip_gradients(
            optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
        )

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: LightningOptimizer, optimizer_closure: Any = None
    ) -> None:
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        optimizer.zero_grad()

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        for param in self.parameters():
            param.requires_grad = True
        self.train()

    # ---- hooks (no-ops unless overridden) ----------------------------------------------------------
    def configure_model(self) -> None: ...
    def configure_sharded_model(self) -> None: ...
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_validation_model_zero_grad(self) -> None:
        self.zero_grad()  # torch sets the gradients to None by default

    def on_validation_model_eval(self) -> None:
        self.eval()

    def on_validation_model_train(self) -> None:
        self.train()

    def on_test_model_eval(self) -> None:
        self.eval()

    def on_test_model_train(self) -> None:
        self.train()

    def on_predict_model_eval(self) -> None:
        self.eval()

    def on_before_zero_grad(self, optimizer: Any) -> None: ...
    def on_before_backward(self, loss: Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer: Any) -> None: ...
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...

    # ---- checkpoints -------------------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the module from a checkpoint's hyper-parameters (``kwargs`` override) and load its weights."""
        from lightning_lib.checkpoint._format import build_from_checkpoint

        return build_from_checkpoint(cls, checkpoint_path, map_location, hparams_file, strict, kwargs)


def _numbers_as_tensors(data: Any) -> Any:
    """Python numbers inside ``data`` as tensors (what ``all_gather`` can send)."""
    if isinstance(data, bool | int | float):
        return torch.tensor(data)
    if isinstance(data, Mapping):
        return type(data)({k: _numbers_as_tensors(v) for k, v in data.items()})  # type: ignore[call-arg]
    if isinstance(data, list | tuple) and not hasattr(data, "_fields"):
        return type(data)(_numbers_as_tensors(v) for v in data)
    return data
