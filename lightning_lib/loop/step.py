"""One batch: its path to the device, a training step under automatic or manual optimization, backward,
the optimizer step with clipping, and scheduler stepping.

Automatic optimization follows Lightning's closure: ``optimizer_step`` runs ``optimizer.step(closure)``
and the closure does training_step, zero_grad (on the first batch of an accumulation window),
backward and its hooks; gradient clipping and ``on_before_optimizer_step`` run after the closure.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from lightning_lib.loop.hooks import HookDispatcher
from lightning_lib.loops.optimization.automatic import Closure, ClosureResult
from lightning_lib.loops.optimization.manual import ManualResult
from lightning_lib.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from lightning_lib.core.optimizer import LightningOptimizer
    from lightning_lib.trainer import Trainer

BatchTransfer = Callable[[Any], Any]
TransferHook = Literal["on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"]


# ---- the batch's path to the device ---------------------------------------------------------------
def batch_transfer(trainer: Trainer, dataloader_idx: int) -> BatchTransfer:
    """The batch path to the device; on CPU with default hooks it is the identity.

    As in Lightning, a datamodule's transfer hook replaces the module's when the datamodule overrides it.
    """
    from lightning_lib.plugins.precision import Precision

    precision = trainer.precision_plugin
    device = trainer.strategy.root_device
    before, before_custom = _transfer_hook(trainer, "on_before_batch_transfer")
    to_device, to_device_custom = _transfer_hook(trainer, "transfer_batch_to_device")
    after, after_custom = _transfer_hook(trainer, "on_after_batch_transfer")
    converts = type(precision).convert_input is not Precision.convert_input
    if device.type == "cpu" and not (before_custom or to_device_custom or after_custom) and not converts:
        return lambda batch: batch

    def transfer(batch: Any) -> Any:
        batch = before("on_before_batch_transfer", batch, dataloader_idx)
        batch = to_device("transfer_batch_to_device", batch, device, dataloader_idx)
        batch = after("on_after_batch_transfer", batch, dataloader_idx)
        # converted on the device, after the hooks (as Lightning does): a CPU-side cast would copy the
        # batch out of pinned memory and make the "non-blocking" transfer block
        return precision.convert_input(batch)

    return transfer


def _transfer_hook(trainer: Trainer, name: TransferHook) -> tuple[Callable[..., Any], bool]:
    """Who runs batch-transfer hook ``name`` (the datamodule's override wins), and whether it is custom."""
    from lightning_lib.core.datamodule import LightningDataModule
    from lightning_lib.utilities.model_helpers import is_overridden

    hooks = trainer._hooks
    module_custom = hooks.module_overrides(name)
    datamodule = trainer.datamodule
    if datamodule is not None and is_overridden(name, datamodule, LightningDataModule):
        seen = trainer._run_state.warnings_seen
        if module_custom and name not in seen:
            seen.add(name)
            warnings.warn(
                f"`{name}` is overridden in both the LightningModule and the LightningDataModule;"
                " the LightningDataModule's is used.",
                UserWarning,
                stacklevel=2,
            )
        return hooks.datamodule, True
    return hooks.module, module_custom


def takes_batch_idx(trainer: Trainer, fn: Callable[..., Any]) -> bool:
    """Whether a step function accepts ``batch_idx`` (Lightning passes it only then)."""
    cache = trainer._run_state.takes_batch_idx
    key = id(getattr(fn, "__func__", fn))
    cached = cache.get(key)
    if cached is None:
        params = list(inspect.signature(fn).parameters.values())
        has_var = any(p.kind == p.VAR_POSITIONAL for p in params)
        cached = has_var or "batch_idx" in {p.name for p in params} or len(params) >= 2
        cache[key] = cached
    return cached


def _training_step_args(trainer: Trainer, batch: Any, batch_idx: int) -> tuple[Any, ...]:
    if takes_batch_idx(trainer, trainer.lightning_module.training_step):
        return (batch, batch_idx)
    return (batch,)


# ---- a training step --------------------------------------------------------------------------------
def _loss_of(output: Any) -> Tensor | None:
    if output is None:
        return None
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise MisconfigurationException(
                "In automatic_optimization, when `training_step` returns a dict, the 'loss' key needs to be"
                f" present; received keys {sorted(output)}."
            )
        loss: Tensor = output["loss"]
        return loss
    raise MisconfigurationException(
        "In automatic optimization, `training_step` must return a Tensor, a dict, or None (where the step will"
        f" be skipped); received {type(output).__name__}."
    )


def _warn_step_skipped(trainer: Trainer) -> None:
    seen = trainer._run_state.warnings_seen
    if "training_step_none" not in seen:
        seen.add("training_step_none")
        warnings.warn(
            "`training_step` returned `None`. If this was on purpose, ignore this warning...",
            UserWarning,
            stacklevel=3,
        )


def run_automatic_step(
    trainer: Trainer, optimizer: LightningOptimizer | None, batch: Any, batch_idx: int, accumulating: bool
) -> Any:
    """Forward, backward and (unless accumulating) an optimizer step; returns the step's outputs."""
    hooks = trainer._hooks
    accumulate = trainer.accumulate_grad_batches
    progress = trainer._run_state.progress
    first_of_window = progress.epoch_batches_done % accumulate == 0
    precision = trainer.precision_plugin
    optim_progress = trainer._run_state.loops.optim.optimizer
    outputs: list[Any] = [None]

    def step_fn() -> ClosureResult:
        with precision.forward_context():
            output = trainer.strategy.training_step(*_training_step_args(trainer, batch, batch_idx))
        loss = _loss_of(output)
        if loss is None:
            if trainer.world_size > 1:
                # the other ranks would wait in the gradients' all-reduce for a backward that never comes
                raise RuntimeError(
                    "Skipping the `training_step` by returning None in distributed training is not supported."
                    " It is recommended that you rewrite your training logic to avoid having to skip the step"
                    " in the first place."
                )
            _warn_step_skipped(trainer)
            # the hooks get an empty dict for a skipped step, as in Lightning
            outputs[0] = {}
            return ClosureResult(None)
        normalized = loss / accumulate if accumulate > 1 else loss
        extra = {k: v for k, v in output.items() if k != "loss"} if isinstance(output, Mapping) else {}
        result = ClosureResult(normalized, extra=extra)
        outputs[0] = {**output, "loss": result.loss} if isinstance(output, Mapping) else {"loss": result.loss}
        return result

    # StochasticWeightAveraging's batch-norm pass (skip_backward): forward only; the optimizer still steps
    # on the gradients it holds, as Lightning's closure without zero_grad and backward does
    def zero_grad_fn() -> None:
        if trainer._run_state.skip_backward:
            return
        assert optimizer is not None
        zero_grad = optim_progress.zero_grad
        zero_grad.increment_ready()
        hooks.callbacks("on_before_zero_grad", optimizer)
        if hooks.module_overrides("on_before_zero_grad"):
            hooks.module("on_before_zero_grad", optimizer)
        zero_grad.increment_started()
        hooks.module("optimizer_zero_grad", trainer.current_epoch, batch_idx, optimizer)
        zero_grad.increment_completed()

    def backward_fn(loss: Tensor) -> None:
        if not trainer._run_state.skip_backward:
            backward(trainer, loss, optimizer)

    closure = Closure(
        step_fn,
        backward_fn=backward_fn,
        # the first batch of an accumulation window starts from clean gradients
        zero_grad_fn=zero_grad_fn if first_of_window and optimizer is not None else None,
    )

    if accumulating:
        with trainer.strategy.block_backward_sync():  # the window's last backward all-reduces the sum
            closure()
    elif optimizer is None:
        closure()
    else:
        optim_progress.step.increment_ready()
        hooks.module("optimizer_step", trainer.current_epoch, batch_idx, optimizer, closure)
        optim_progress.step.increment_completed()
        progress.global_step += 1
    return outputs[0]


def run_manual_step(trainer: Trainer, batch: Any, batch_idx: int) -> Any:
    """``training_step`` drives the optimizers itself; ``global_step`` counts its ``step()`` calls."""
    with trainer.precision_plugin.forward_context():
        output = trainer.strategy.training_step(*_training_step_args(trainer, batch, batch_idx))
    # a step that returned nothing gives the batch-end hooks an empty dict, as in Lightning
    return ManualResult.from_training_step_output(output).asdict()


# ---- backward and the optimizer step (also reached from manual_backward and LightningOptimizer.step) ----
def backward(trainer: Trainer, loss: Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> None:
    """Scale the loss, then the backward hooks around ``LightningModule.backward`` (the strategy's)."""
    trainer.strategy.backward(loss, optimizer, *args, **kwargs)


def optimizer_step(
    trainer: Trainer, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None, **kwargs: Any
) -> Any:
    """``optimizer.step`` through the precision plugin, with clipping and its hook after the closure."""
    hooks = trainer._hooks
    automatic = trainer.lightning_module.automatic_optimization
    clip = automatic and (
        bool(trainer.gradient_clip_val) or hooks.module_overrides("configure_gradient_clipping")
    )

    def after_closure() -> None:
        hooks.callbacks("on_before_optimizer_step", optimizer)
        if hooks.module_overrides("on_before_optimizer_step"):
            hooks.module("on_before_optimizer_step", optimizer)
        if clip:
            hooks.module(
                "configure_gradient_clipping",
                optimizer,
                gradient_clip_val=trainer.gradient_clip_val,
                gradient_clip_algorithm=trainer.gradient_clip_algorithm,
            )

    if not automatic:
        trainer._run_state.loops.manual_step.increment_ready()
    out = trainer.precision_plugin.optimizer_step(
        optimizer, closure or _no_op_closure, after_closure, automatic, **kwargs
    )
    if not automatic:
        trainer._run_state.loops.manual_step.increment_completed()
        trainer._run_state.progress.global_step += 1
    return out


def clip_gradients(
    trainer: Trainer, optimizer: torch.optim.Optimizer, clip_val: int | float | None, algorithm: str | None
) -> None:
    """``LightningModule.clip_gradients``: the Trainer's settings unless the call gives its own (not both)."""
    if clip_val is None:
        clip_val = trainer.gradient_clip_val or 0.0
    elif trainer.gradient_clip_val is not None and trainer.gradient_clip_val != clip_val:
        raise ValueError(
            f"Expected one gradient_clip_val, received Trainer(gradient_clip_val={trainer.gradient_clip_val})"
            f" and clip_gradients(gradient_clip_val={clip_val}); use only one."
        )
    if algorithm is None:
        algorithm = trainer.gradient_clip_algorithm or "norm"
    else:
        algorithm = algorithm.lower()
        if trainer.gradient_clip_algorithm is not None and trainer.gradient_clip_algorithm != algorithm:
            raise ValueError(
                f"Expected one gradient_clip_algorithm, received Trainer({trainer.gradient_clip_algorithm!r})"
                f" and clip_gradients({algorithm!r}); use only one."
            )
    if isinstance(clip_val, bool) or not isinstance(clip_val, int | float):
        raise TypeError(f"Expected gradient_clip_val to be an int or a float, received {clip_val!r}.")
    if algorithm not in ("norm", "value"):
        raise ValueError(f"Expected gradient_clip_algorithm 'norm' or 'value', received {algorithm!r}.")
    if clip_val <= 0:
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, clip_value=clip_val)
    else:
        torch.nn.utils.clip_grad_norm_(params, clip_val)


def _no_op_closure() -> None:
    return None


# ---- schedulers -------------------------------------------------------------------------------------
def update_lr_schedulers(trainer: Trainer, interval: str, plateau: bool) -> None:
    """Step the schedulers whose interval and frequency are due (Lightning's ``_update_learning_rates``)."""
    configs = trainer.lr_scheduler_configs
    if not configs or not trainer.lightning_module.automatic_optimization:
        return
    progress = trainer._run_state.progress
    hooks: HookDispatcher = trainer._hooks
    for config in configs:
        if config.reduce_on_plateau != plateau or config.interval != interval:
            continue
        index = (progress.batch_idx if interval == "step" else progress.current_epoch) + 1
        if index % config.frequency != 0:
            continue
        monitor_value = None
        if config.reduce_on_plateau:
            assert config.monitor is not None
            monitor_value = trainer.fit_loop.epoch_loop._get_monitor_value(config.monitor)
            if monitor_value is None:
                available = sorted(trainer.callback_metrics)
                if config.strict:
                    raise ValueError(
                        f"Expected the metric {config.monitor!r} that ReduceLROnPlateau monitors to be logged;"
                        f" available metrics: {available}. Set `strict: False` in the scheduler config to skip."
                    )
                warnings.warn(
                    f"ReduceLROnPlateau monitors {config.monitor!r} which was not logged; skipping this update.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
        counts = trainer._run_state.loops.scheduler
        counts.increment_ready()
        hooks.module("lr_scheduler_step", config.scheduler, monitor_value)
        counts.increment_completed()
