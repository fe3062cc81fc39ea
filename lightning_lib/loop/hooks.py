"""One generic hook dispatcher: callbacks, the LightningModule and the LightningDataModule.

Hooks that a callback does not override are never called: the per-hook list of bound methods is
computed once per run, which keeps the per-step cost of many default callbacks near zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer


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
        self._callback_fns.clear()
        self._module_overrides.clear()

    def callback_fns(self, name: str, monitoring: bool | None = None) -> list[Any]:
        key = (name, monitoring)
        fns = self._callback_fns.get(key)
        if fns is None:
            fns = []
            for cb in self.trainer.callbacks:
                if monitoring is not None and is_monitoring(cb) != monitoring:
                    continue
                if name in ("state_dict", "load_state_dict") or overrides(cb, name, Callback):
                    fns.append(getattr(cb, name))
            self._callback_fns[key] = fns
        return fns

    def callbacks(self, name: str, *args: Any, monitoring: bool | None = None) -> None:
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

    def module_overrides(self, name: str) -> bool:
        found = self._module_overrides.get(name)
        if found is None:
            from lightning_lib.core.module import LightningModule

            found = self._module_overrides[name] = overrides(
                self.trainer.lightning_module, name, LightningModule
            )
        return found

    def module(self, name: str, *args: Any, **kwargs: Any) -> Any:
        module: LightningModule = self.trainer.lightning_module
        previous = module.__dict__["_current_fx_name"]
        module.__dict__["_current_fx_name"] = name
        try:
            return getattr(module, name)(*args, **kwargs)
        finally:
            module.__dict__["_current_fx_name"] = previous

    def datamodule(self, name: str, *args: Any, **kwargs: Any) -> Any:
        datamodule = self.trainer.datamodule
        if datamodule is None:
            return None
        return getattr(datamodule, name)(*args, **kwargs)

    def both(self, name: str, *args: Any) -> None:
        """Callbacks first, then the module: Lightning's order for nearly every hook."""
        self.callbacks(name, *args)
        if self.module_overrides(name):
            self.module(name, *args)
