"""The hook names the loops dispatch are ``Literal`` types that mypy checks; here, that each one is real."""

from __future__ import annotations

from typing import get_args

import pytest

import lightning_lib as pl
from lightning_lib.loop.hooks import CallbackHook, DataModuleHook, HookDispatcher, ModuleHook


def _names(alias: object) -> list[str]:
    """The strings of a (possibly nested) union of Literal types."""
    names: list[str] = []
    for arg in get_args(alias):
        names.extend([arg] if isinstance(arg, str) else _names(arg))
    return names


@pytest.mark.parametrize(
    ("alias", "owner"),
    [(CallbackHook, pl.Callback), (ModuleHook, pl.LightningModule), (DataModuleHook, pl.LightningDataModule)],
)
def test_every_dispatched_hook_exists_on_its_class(alias: object, owner: type) -> None:
    names = _names(alias)
    assert len(names) == len(set(names)) > 4
    missing = [name for name in names if not callable(getattr(owner, name, None))]
    assert missing == [], f"{owner.__name__} has no hooks {missing}"


def test_every_callback_hook_the_base_class_defines_can_be_dispatched() -> None:
    # a Callback hook the loops cannot name could never be called
    defined = {
        name
        for name, value in vars(pl.Callback).items()
        if callable(value) and name.startswith(("on_", "setup", "teardown"))
    }
    assert defined - set(_names(CallbackHook)) == {"on_save_checkpoint", "on_load_checkpoint"}


def test_dispatcher_calls_only_callbacks_that_override_a_hook() -> None:
    calls: list[str] = []

    class Counting(pl.Callback):
        def on_train_start(self, trainer: object, pl_module: object) -> None:
            calls.append("on_train_start")

    class Module(pl.LightningModule):
        pass

    trainer = pl.Trainer(
        callbacks=[Counting(), pl.Callback()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.lightning_module = Module()
    dispatcher = HookDispatcher(trainer)
    assert len(dispatcher.callback_fns("on_train_start")) == 1
    assert dispatcher.callback_fns("on_train_end") == []
    dispatcher.callbacks("on_train_start")
    assert calls == ["on_train_start"]
