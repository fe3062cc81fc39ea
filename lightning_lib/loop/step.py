"""The per-batch helpers the loops call: batch transfer, step arguments, backward, optimizer step, clipping."""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


class TrainerSteps:
    """Mixin of ``Trainer``: what one training or evaluation batch needs from it."""

    # ---- per-step helpers ----------------------------------------------------------------------------
    def _batch_transfer(self: Trainer, dataloader_idx: int) -> Any:  # type: ignore[misc]
        """The batch path to the device; on CPU with default hooks it is the identity.

        As in Lightning, a datamodule's transfer hook replaces the module's when the datamodule overrides it.
        """
        precision = self.precision_plugin
        device = self.strategy.root_device
        calls = [
            self._batch_hook(n)
            for n in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
        ]
        from lightning_lib.plugins.precision import Precision

        converts = type(precision).convert_input is not Precision.convert_input
        if device.type == "cpu" and not any(custom for _, custom in calls) and not converts:
            return lambda batch: batch
        (before, _), (to_device, _), (after, _) = calls

        def transfer(batch: Any) -> Any:
            batch = before("on_before_batch_transfer", batch, dataloader_idx)
            batch = to_device("transfer_batch_to_device", batch, device, dataloader_idx)
            batch = after("on_after_batch_transfer", batch, dataloader_idx)
            # converted on the device, after the hooks (as Lightning does): a CPU-side cast would copy the
            # batch out of pinned memory and make the "non-blocking" transfer block
            return precision.convert_input(batch)

        return transfer

    def _batch_hook(self: Trainer, name: str) -> tuple[Any, bool]:  # type: ignore[misc]
        """Who runs batch-transfer hook ``name`` (the datamodule's override wins), and whether it is custom."""
        from lightning_lib.core.datamodule import LightningDataModule
        from lightning_lib.loop.hooks import overrides

        module_custom = self._hooks.module_overrides(name)
        datamodule = self.datamodule
        if datamodule is not None and overrides(datamodule, name, LightningDataModule):
            seen: set[str] = self.__dict__.setdefault("_batch_hook_warnings", set())
            if module_custom and name not in seen:
                seen.add(name)
                warnings.warn(
                    f"`{name}` is overridden in both the LightningModule and the LightningDataModule;"
                    " the LightningDataModule's is used.",
                    UserWarning,
                    stacklevel=2,
                )
            return self._hooks.datamodule, True
        return self._hooks.module, module_custom

    def _takes_batch_idx(self: Trainer, fn: Any) -> bool:  # type: ignore[misc]
        key = id(getattr(fn, "__func__", fn))
        cached = self._step_args_cache.get(key)
        if cached is None:
            params = list(inspect.signature(fn).parameters.values())
            has_var = any(p.kind == p.VAR_POSITIONAL for p in params)
            cached = has_var or "batch_idx" in {p.name for p in params} or len(params) >= 2
            self._step_args_cache[key] = cached
        return cached

    def _training_step_args(self: Trainer, batch: Any, batch_idx: int) -> tuple[Any, ...]:  # type: ignore[misc]
        if self._takes_batch_idx(self.lightning_module.training_step):
            return (batch, batch_idx)
        return (batch,)

    def _backward(self: Trainer, loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[misc]
        hooks = self._hooks
        scaled = self.precision_plugin.scale_loss(loss)
        hooks.callbacks("on_before_backward", scaled)
        if hooks.module_overrides("on_before_backward"):
            hooks.module("on_before_backward", scaled)
        hooks.module("backward", scaled, *args, **kwargs)
        hooks.callbacks("on_after_backward")
        if hooks.module_overrides("on_after_backward"):
            hooks.module("on_after_backward")

    def _optimizer_step(self: Trainer, optimizer: torch.optim.Optimizer, closure: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        hooks = self._hooks
        module = self.lightning_module
        automatic = module.automatic_optimization
        clip = automatic and (
            bool(self.gradient_clip_val) or hooks.module_overrides("configure_gradient_clipping")
        )

        def after_closure() -> None:
            hooks.callbacks("on_before_optimizer_step", optimizer)
            if hooks.module_overrides("on_before_optimizer_step"):
                hooks.module("on_before_optimizer_step", optimizer)
            if clip:
                hooks.module(
                    "configure_gradient_clipping",
                    optimizer,
                    gradient_clip_val=self.gradient_clip_val,
                    gradient_clip_algorithm=self.gradient_clip_algorithm,
                )

        out = self.precision_plugin.optimizer_step(
            optimizer, closure or _no_op_closure, after_closure, automatic, **kwargs
        )
        if not automatic:
            self.progress.global_step += 1
        return out

    def _clip_gradients(self: Trainer, optimizer: Any, clip_val: Any, algorithm: str | None) -> None:  # type: ignore[misc]
        if clip_val is None:
            clip_val = self.gradient_clip_val or 0.0
        elif self.gradient_clip_val is not None and self.gradient_clip_val != clip_val:
            raise ValueError(
                f"Expected one gradient_clip_val, received Trainer(gradient_clip_val={self.gradient_clip_val})"
                f" and clip_gradients(gradient_clip_val={clip_val}); use only one."
            )
        if algorithm is None:
            algorithm = self.gradient_clip_algorithm or "norm"
        else:
            algorithm = algorithm.lower()
            if self.gradient_clip_algorithm is not None and self.gradient_clip_algorithm != algorithm:
                raise ValueError(
                    f"Expected one gradient_clip_algorithm, received Trainer({self.gradient_clip_algorithm!r})"
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
