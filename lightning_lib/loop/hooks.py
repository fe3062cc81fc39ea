"""One generic hook dispatcher: callbacks, the LightningModule and the LightningDataModule.

Hooks that a callback does not override are never called: the per-hook list of bound methods is
computed once per run, which keeps the per-step cost of many default callbacks near zero. Hook names
are ``Literal`` types, so mypy rejects a misspelt hook where it is dispatched (a test checks that
each name exists on the class it is called on).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.profilers import Profiler
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
        "configure_sharded_model",
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
LoaderHook = Literal["train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader"]
DataModuleHook = Literal[
    "prepare_data",
    "setup",
    "teardown",
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "predict_dataloader",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
    "state_dict",
    "load_state_dict",
]


def _needs_call(obj: object, name: str, base: type) -> bool:
    """Whether calling hook ``name`` on ``obj`` can do anything: its attribute is not ``base``'s no-op.

    This is not ``is_overridden``: a hook wrapped on the instance (``functools.wraps`` around the base
    method, a recording spy, a ``Mock``) must still be called, since the wrapper runs code of its own;
    only the base's own function, or ``None``, is skipped.
    """
    attribute = getattr(obj, name, None)
    if attribute is None:
        return False
    function = getattr(attribute, "__func__", None)
    default = getattr(base, name, None)
    return function is None or default is None or function is not default


_STRATEGY_ACTIONS = frozenset({"training_step", "validation_step", "test_step", "predict_step", "backward"})


def is_monitoring(callback: Callback) -> bool:
    """EarlyStopping and checkpoint callbacks run after the module in ``on_train_epoch_end``."""
    from lightning_lib.callbacks.early_stopping import EarlyStopping
    from lightning_lib.callbacks.model_checkpoint import Checkpoint

    return isinstance(callback, EarlyStopping | Checkpoint)


class HookDispatcher:
    """Calls hooks in Lightning's order and records which hook is running (for ``self.log``).

    With a profiler other than the pass-through one, each call is profiled under Lightning's action
    names (``[Callback]<state_key>.<hook>``, ``[LightningModule]<Class>.<hook>``,
    ``[LightningDataModule]<Class>.<hook>``); without one the calls go straight through.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._callback_fns: dict[tuple[str, bool | None], list[Any]] = {}
        self._module_overrides: dict[str, bool] = {}
        self._profiler: Profiler | None = None

    def reset(self) -> None:
        """A new run: the callbacks, the module or the profiler may have changed."""
        from lightning_lib.profilers import PassThroughProfiler

        self._callback_fns.clear()
        self._module_overrides.clear()
        profiler = self.trainer.profiler
        self._profiler = None if isinstance(profiler, PassThroughProfiler) else profiler

    def callback_fns(self, name: CallbackHook, monitoring: bool | None = None) -> list[Any]:
        """The bound ``name`` methods of the callbacks that override it (``monitoring`` filters them)."""
        key = (name, monitoring)
        fns = self._callback_fns.get(key)
        if fns is None:
            fns = []
            for cb in self.trainer.callbacks:
                if monitoring is not None and is_monitoring(cb) != monitoring:
                    continue
                if _needs_call(cb, name, Callback):
                    fns.append(getattr(cb, name))
            self._callback_fns[key] = fns
        return fns

    def callbacks(
        self, name: CallbackHook, *args: Any, monitoring: bool | None = None, **kwargs: Any
    ) -> None:
        """Call ``name`` on every callback that overrides it, as ``hook(trainer, module, *args, **kwargs)``."""
        fns = self.callback_fns(name, monitoring)
        if not fns:
            return
        trainer = self.trainer
        module = trainer.lightning_module
        previous = module.__dict__["_current_fx_name"]
        module.__dict__["_current_fx_name"] = name
        try:
            if self._profiler is None:
                for fn in fns:
                    fn(trainer, module, *args, **kwargs)
            else:
                for fn in fns:
                    with self._profiler.profile(f"[Callback]{fn.__self__.state_key}.{name}"):
                        fn(trainer, module, *args, **kwargs)
        finally:
            module.__dict__["_current_fx_name"] = previous

    def module_overrides(self, name: ModuleHook) -> bool:
        """Whether the LightningModule's ``name`` must be called: it is not the base's no-op (cached for the run)."""
        found = self._module_overrides.get(name)
        if found is None:
            from lightning_lib.core.module import LightningModule

            found = self._module_overrides[name] = _needs_call(
                self.trainer.lightning_module, name, LightningModule
            )
        return found

    def module(self, name: ModuleHook, *args: Any, **kwargs: Any) -> Any:
        """Call the LightningModule's ``name`` with ``self.log`` attributed to it; a hook set to None
        (``model.on_train_epoch_end = None``) is not called, as in Lightning."""
        module: LightningModule = self.trainer.lightning_module
        fn = getattr(module, name)
        if fn is None:
            return None
        previous = module.__dict__["_current_fx_name"]
        module.__dict__["_current_fx_name"] = name
        try:
            if self._profiler is None:
                return fn(*args, **kwargs)
            # Lightning times the steps and backward as the strategy's actions, the other hooks as the module's
            if name in _STRATEGY_ACTIONS:
                action = f"[Strategy]{type(self.trainer.strategy).__name__}.{name}"
            else:
                action = f"[LightningModule]{type(module).__name__}.{name}"
            with self._profiler.profile(action):
                return fn(*args, **kwargs)
        finally:
            module.__dict__["_current_fx_name"] = previous

    def datamodule(self, name: DataModuleHook, *args: Any, **kwargs: Any) -> Any:
        """Call the LightningDataModule's ``name`` (nothing without a datamodule)."""
        datamodule = self.trainer.datamodule
        if datamodule is None:
            return None
        fn = getattr(datamodule, name)
        if fn is None:
            return None
        if self._profiler is None:
            return fn(*args, **kwargs)
        with self._profiler.profile(f"[LightningDataModule]{type(datamodule).__name__}.{name}"):
            return fn(*args, **kwargs)

    @property
    def profiling(self) -> bool:
        """Whether this run has a profiler (other than the pass-through one)."""
        return self._profiler is not None

    def profile(self, action: str) -> AbstractContextManager[Any]:
        """``trainer.profiler.profile(action)`` when profiling, else a no-op context."""
        return nullcontext() if self._profiler is None else self._profiler.profile(action)
