"""One generic hook dispatcher: callbacks, the LightningModule and the LightningDataModule.

Hooks that a callback does not override are never called: the per-hook list of bound methods is
computed once per run, which keeps the per-step cost of many default callbacks near zero. Hook names
are ``Literal`` types, so mypy rejects a misspelt hook where it is dispatched (a test checks that
each name exists on the class it is called on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

# the hooks of the fit / validate / test / predict loops that callbacks and the module share
LoopHook = Literal[
    "setup",
    "teardown",
    "on_fit_start",
    "on_fit_end",
    "on_train_start",
    "on_train_end",
    "on_train_epoch_start",
    "on_train_epoch_end",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_validation_start",
    "on_validation_end",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_start",
    "on_test_end",
    "on_test_epoch_start",
    "on_test_epoch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_start",
    "on_predict_end",
    "on_predict_epoch_start",
    "on_predict_epoch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
]
CallbackHook = LoopHook | Literal["on_sanity_check_start", "on_sanity_check_end", "on_exception"]
ModuleHook = (
    LoopHook
    | Literal[
        "prepare_data",
        "configure_model",
        "configure_optimizers",
        "training_step",
        "validation_step",
        "test_step",
        "predict_step",
        "train_dataloader",
        "val_dataloader",
        "test_dataloader",
        "predict_dataloader",
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "backward",
        "optimizer_step",
        "optimizer_zero_grad",
        "lr_scheduler_step",
        "configure_gradient_clipping",
        "on_validation_model_eval",
        "on_validation_model_train",
        "on_validation_model_zero_grad",
        "on_test_model_eval",
        "on_test_model_train",
        "on_predict_model_eval",
    ]
)
DataModuleHook = Literal[
    "setup",
    "teardown",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
]


def overrides(obj: object, name: str, base: type) -> bool:
    """Whether ``obj`` defines ``name`` differently from ``base`` (on its class or on the instance)."""
    if name in getattr(obj, "__dict__", {}):
        return True
    impl = getattr(type(obj), name, None)
    default = getattr(base, name, None)
    if impl is None:
        return False
    if default is None:
        return True
    return getattr(impl, "__code__", impl) is not getattr(default, "__code__", default)


def is_monitoring(callback: Callback) -> bool:
    """EarlyStopping and checkpoint callbacks run after the module in ``on_train_epoch_end``."""
    from lightning_lib.callbacks.early_stopping import EarlyStopping
    from lightning_lib.callbacks.model_checkpoint import Checkpoint

    return isinstance(callback, EarlyStopping | Checkpoint)


class HookDispatcher:
    """Calls hooks in Lightning's order and records which hook is running (for ``self.log``)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._callback_fns: dict[tuple[str, bool | None], list[Any]] = {}
        self._module_overrides: dict[str, bool] = {}

    def reset(self) -> None:
        """A new run: the callbacks or the module may have changed."""
        self._callback_fns.clear()
        self._module_overrides.clear()

    def callback_fns(self, name: CallbackHook, monitoring: bool | None = None) -> list[Any]:
        """The bound ``name`` methods of the callbacks that override it (``monitoring`` filters them)."""
        key = (name, monitoring)
        fns = self._callback_fns.get(key)
        if fns is None:
            fns = []
            for cb in self.trainer.callbacks:
                if monitoring is not None and is_monitoring(cb) != monitoring:
                    continue
                if overrides(cb, name, Callback):
                    fns.append(getattr(cb, name))
            self._callback_fns[key] = fns
        return fns

    def callbacks(self, name: CallbackHook, *args: Any, monitoring: bool | None = None) -> None:
        """Call ``name`` on every callback that overrides it, as ``hook(trainer, module, *args)``."""
        fns = self.callback_fns(name, monitoring)
        if not fns:
            return
        trainer = self.trainer
        module = trainer.lightning_module
        previous = module.__dict__["_current_fx_name"]
        module.__dict__["_current_fx_name"] = name
        try:
            for fn in fns:
                fn(trainer, module, *args)
        finally:
            module.__dict__["_current_fx_name"] = previous

    def module_overrides(self, name: ModuleHook) -> bool:
        """Whether the LightningModule overrides ``name`` (cached for the run)."""
        found = self._module_overrides.get(name)
        if found is None:
            from lightning_lib.core.module import LightningModule

            found = self._module_overrides[name] = overrides(
                self.trainer.lightning_module, name, LightningModule
            )
        return found

    def module(self, name: ModuleHook, *args: Any, **kwargs: Any) -> Any:
        """Call the LightningModule's ``name`` with ``self.log`` attributed to it."""
        module: LightningModule = self.trainer.lightning_module
        previous = module.__dict__["_current_fx_name"]
        module.__dict__["_current_fx_name"] = name
        try:
            return getattr(module, name)(*args, **kwargs)
        finally:
            module.__dict__["_current_fx_name"] = previous

    def datamodule(self, name: DataModuleHook, *args: Any, **kwargs: Any) -> Any:
        """Call the LightningDataModule's ``name`` (nothing without a datamodule)."""
        datamodule = self.trainer.datamodule
        if datamodule is None:
            return None
        return getattr(datamodule, name)(*args, **kwargs)
