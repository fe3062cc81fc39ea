"""LambdaCallback: every hook name accepted, unknown names refused."""

from __future__ import annotations

from typing import Any

import pytest

from lightning_lib.callbacks.callback import Callback
from lightning_lib.callbacks.lambda_function import _HOOK_NAMES, LambdaCallback


def test_hooks_are_called() -> None:
    calls: list[tuple[str, tuple[object, ...]]] = []
    cb = LambdaCallback(
        on_train_epoch_end=lambda *args: calls.append(("epoch_end", args)),
        setup=lambda trainer, pl_module, stage: calls.append(("setup", (stage,))),
        on_fit_start=None,
    )
    cb.setup("t", "m", "fit")  # type: ignore[arg-type]
    cb.on_train_epoch_end("t", "m")  # type: ignore[arg-type]
    cb.on_fit_start("t", "m")  # type: ignore[arg-type]  # None left the no-op in place
    assert calls == [("setup", ("fit",)), ("epoch_end", ("t", "m"))]
    assert "on_train_epoch_end" in vars(cb) and "on_fit_start" not in vars(cb)


def test_all_callback_hooks_accepted() -> None:
    cb = LambdaCallback(**dict.fromkeys(_HOOK_NAMES, print))
    for name in _HOOK_NAMES:
        assert getattr(cb, name) is print
    assert "on_train_batch_end" in _HOOK_NAMES and "state_dict" not in _HOOK_NAMES
    assert isinstance(cb, Callback)


def test_unknown_or_bad_hooks_refused() -> None:
    with pytest.raises(TypeError, match="on_trian_start"):
        LambdaCallback(on_trian_start=print)
    with pytest.raises(TypeError, match="Expected `setup` to be callable"):
        LambdaCallback(setup=3)  # type: ignore[arg-type]


@pytest.mark.parity
def test_same_hook_names_as_lightning() -> None:
    import inspect

    pl_callbacks = pytest.importorskip("pytorch_lightning.callbacks")
    theirs = set(inspect.signature(pl_callbacks.LambdaCallback.__init__).parameters) - {"self"}
    assert theirs <= _HOOK_NAMES
    # Lightning's LambdaCallback lacks only the predict-epoch hooks it added later, if anything.
    assert _HOOK_NAMES - theirs <= {"on_predict_epoch_start", "on_predict_epoch_end"}


def test_hooks_run_in_a_real_fit(tmp_path: Any) -> None:
    import lightning_lib
    from tests.helpers import make_classes, quiet_trainer_kwargs

    epochs: list[int] = []
    batches: list[int] = []
    cb = LambdaCallback(
        on_train_epoch_end=lambda trainer, pl_module: epochs.append(trainer.current_epoch),
        on_train_batch_end=lambda trainer, pl_module, outputs, batch, batch_idx: batches.append(batch_idx),
    )
    classes = make_classes(lightning_lib)
    trainer = lightning_lib.Trainer(
        **quiet_trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=3, callbacks=[cb])
    )
    trainer.fit(classes["ClassifierModel"](), datamodule=classes["ClassifierDataModule"]())
    assert epochs == [0, 1] and batches == [0, 1, 2, 0, 1, 2]
