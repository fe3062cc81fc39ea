"""One training step under automatic or manual optimization, and scheduler stepping.

Automatic optimization follows Lightning's closure: ``optimizer_step`` runs ``optimizer.step(closure)``
and the closure does training_step, zero_grad (on the first batch of an accumulation window),
backward and its hooks; gradient clipping and ``on_before_optimizer_step`` run after the closure.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from lightning_lib.core.optimizer import LightningOptimizer
    from lightning_lib.trainer import Trainer


def _loss_of(output: Any) -> Tensor | None:
    if output is None:
        return None
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise ValueError(
                'Expected the dict returned by `training_step` to contain a "loss" key, received keys'
                f" {sorted(output)}."
            )
        return output["loss"]
    raise ValueError(
        "Expected `training_step` to return a loss tensor, a dict with a 'loss' key, or None;"
        f" received {type(output).__name__}."
    )


def run_automatic_step(
    trainer: Trainer, optimizer: LightningOptimizer | None, batch: Any, batch_idx: int, accumulating: bool
) -> Any:
    """Forward, backward and (unless accumulating) an optimizer step; returns the step's outputs."""
    hooks = trainer._hooks
    accumulate = trainer.accumulate_grad_batches
    first_of_window = trainer.progress.epoch_batches_done % accumulate == 0
    precision = trainer.precision_plugin
    outputs: list[Any] = [None]

    def closure() -> Tensor | None:
        with precision.forward_context():
            output = trainer.strategy.training_step(*trainer._training_step_args(batch, batch_idx))
        loss = _loss_of(output)
        if loss is None:
            outputs[0] = output
            return None
        normalized = loss / accumulate if accumulate > 1 else loss
        if first_of_window and optimizer is not None:
            hooks.callbacks("on_before_zero_grad", optimizer)
            if hooks.module_overrides("on_before_zero_grad"):
                hooks.module("on_before_zero_grad", optimizer)
            hooks.module("optimizer_zero_grad", trainer.current_epoch, batch_idx, optimizer)
        trainer._backward(normalized, optimizer)
        detached = normalized.detach()
        if isinstance(output, Mapping):
            outputs[0] = {**output, "loss": detached}
        else:
            outputs[0] = {"loss": detached}
        return detached

    if accumulating:
        with trainer.strategy.block_backward_sync():  # the window's last backward all-reduces the sum
            closure()
    elif optimizer is None:
        closure()
    else:
        hooks.module("optimizer_step", trainer.current_epoch, batch_idx, optimizer, closure)
        trainer.progress.global_step += 1
    return outputs[0]


def run_manual_step(trainer: Trainer, batch: Any, batch_idx: int) -> Any:
    """``training_step`` drives the optimizers itself; ``global_step`` counts its ``step()`` calls."""
    with trainer.precision_plugin.forward_context():
        output = trainer.strategy.training_step(*trainer._training_step_args(batch, batch_idx))
    if isinstance(output, Tensor):
        output = {"loss": output.detach()}
    elif isinstance(output, Mapping) and isinstance(output.get("loss"), Tensor):
        output = {**output, "loss": output["loss"].detach()}
    return output


def update_lr_schedulers(trainer: Trainer, interval: str, plateau: bool) -> None:
    """Step the schedulers whose interval and frequency are due (Lightning's ``_update_learning_rates``)."""
    configs = trainer.lr_scheduler_configs
    if not configs or not trainer.lightning_module.automatic_optimization:
        return
    for config in configs:
        if config.reduce_on_plateau != plateau or config.interval != interval:
            continue
        index = (trainer.progress.batch_idx if interval == "step" else trainer.current_epoch) + 1
        if index % config.frequency != 0:
            continue
        monitor_value = None
        if config.reduce_on_plateau:
            assert config.monitor is not None
            monitor_value = trainer.callback_metrics.get(config.monitor)
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
        trainer._hooks.module("lr_scheduler_step", config.scheduler, monitor_value)
