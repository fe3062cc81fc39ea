"""OnExceptionCheckpoint: a failed run leaves a checkpoint to resume from; a successful one leaves none."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import OnExceptionCheckpoint
from tests.helpers import (
    Crash,
    CrashAfter,
    classification_data,
    make_classes,
    quiet_trainer_kwargs,
    reference_lightning,
)


def _fit(pl: ModuleType, root: Any, crash_at: int | None, ckpt_path: str | None = None) -> Any:
    pl.seed_everything(7)
    model = make_classes(pl)["ClassifierModel"]()
    callbacks: list[Any] = [pl.callbacks.OnExceptionCheckpoint(root)]
    if crash_at is not None:
        crash_cls = CrashAfter if pl is lightning_lib else _crash_class(pl)
        callbacks.append(crash_cls(crash_at))
    # the checkpoint callback replaces the default ModelCheckpoint (enable_checkpointing=False would refuse it)
    kwargs = quiet_trainer_kwargs(root, max_epochs=2, limit_val_batches=0, enable_checkpointing=True)
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    data = DataLoader(classification_data(64), batch_size=8)
    if crash_at is not None:
        with pytest.raises(Crash):
            trainer.fit(model, data, ckpt_path=ckpt_path)
    else:
        trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer


def _crash_class(pl: ModuleType) -> type:
    class CrashAfterPL(pl.Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step >= self.step:
                raise Crash(f"crash after step {trainer.global_step}")

    return CrashAfterPL


@pytest.mark.parity
def test_the_checkpoint_of_a_failure_holds_what_lightning_s_holds(tmp_path: Any) -> None:
    pl = reference_lightning()
    ours_model, _ = _fit(lightning_lib, tmp_path / "ours", crash_at=5)
    theirs_model, _ = _fit(pl, tmp_path / "theirs", crash_at=5)
    ours = torch.load(tmp_path / "ours" / "on_exception.ckpt", weights_only=True)
    theirs = torch.load(tmp_path / "theirs" / "on_exception.ckpt", weights_only=True)
    assert (ours["epoch"], ours["global_step"]) == (theirs["epoch"], theirs["global_step"]) == (0, 5)
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in ours["state_dict"].items():
        torch.testing.assert_close(value, theirs["state_dict"][key])
        torch.testing.assert_close(value, ours_model.state_dict()[key])
    assert ours["hyper_parameters"] == theirs["hyper_parameters"]
    # pytorch_lightning opens the file lightning_lib wrote
    restored = make_classes(pl)["ClassifierModel"].load_from_checkpoint(
        tmp_path / "ours" / "on_exception.ckpt"
    )
    torch.testing.assert_close(restored.net[0].weight, theirs_model.net[0].weight)


def test_a_failed_fit_resumes_from_it_and_ends_like_an_uninterrupted_one(tmp_path: Any) -> None:
    reference, _ = _fit(lightning_lib, tmp_path / "ref", crash_at=None)
    assert (
        list((tmp_path / "ref").glob("**/*")) == []
    )  # removed at teardown; no default ModelCheckpoint wrote
    _fit(lightning_lib, tmp_path / "run", crash_at=11)  # in the second epoch, after its third batch
    path = str(tmp_path / "run" / "on_exception.ckpt")
    model, trainer = _fit(lightning_lib, tmp_path / "run", crash_at=None, ckpt_path=path)
    assert trainer.global_step == 16
    for ours, expected in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, expected)
    assert not os.path.exists(path)


def test_a_later_failure_overwrites_it(tmp_path: Any) -> None:
    _fit(lightning_lib, tmp_path, crash_at=3)
    first = torch.load(tmp_path / "on_exception.ckpt", weights_only=True)["global_step"]
    _fit(lightning_lib, tmp_path, crash_at=6)
    second = torch.load(tmp_path / "on_exception.ckpt", weights_only=True)["global_step"]
    assert (first, second) == (3, 6)


def test_keyboard_interrupt_saves_too(tmp_path: Any) -> None:
    class Interrupt(lightning_lib.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 2:
                raise KeyboardInterrupt

    model = make_classes(lightning_lib)["BoringModel"]()
    callbacks = [OnExceptionCheckpoint(tmp_path, filename="interrupted"), Interrupt()]
    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=True)
    trainer = lightning_lib.Trainer(callbacks=callbacks, **kwargs)
    with pytest.raises(SystemExit):  # after the graceful shutdown, as Lightning exits on Ctrl-C
        trainer.fit(model)
    assert trainer.interrupted
    assert torch.load(tmp_path / "interrupted.ckpt", weights_only=True)["global_step"] == 2


def test_arguments(tmp_path: Any) -> None:
    callback = OnExceptionCheckpoint(tmp_path, filename="crash")
    assert callback.ckpt_path == os.path.join(str(tmp_path), "crash.ckpt")
    assert OnExceptionCheckpoint("s3://bucket/run").ckpt_path == "s3://bucket/run/on_exception.ckpt"
    with pytest.raises(ValueError, match="The filename cannot be empty"):
        OnExceptionCheckpoint(tmp_path, filename="")
    assert isinstance(callback, lightning_lib.callbacks.Checkpoint)
    with pytest.raises(ValueError, match="enable_checkpointing=False"):
        lightning_lib.Trainer(callbacks=[callback], enable_checkpointing=False)
    trainer = lightning_lib.Trainer(callbacks=[callback], logger=False)
    assert trainer.checkpoint_callbacks == [callback]


@pytest.mark.services
def test_on_object_storage(tmp_path: Any, s3_endpoint: str) -> None:
    from lightning_lib.checkpoint import list_committed, load_file
    from lightning_lib.storage import open_store

    dirpath = f"{s3_endpoint}/on-exception-{os.getpid()}"
    model = make_classes(lightning_lib)["BoringModel"]()
    callbacks = [OnExceptionCheckpoint(dirpath), CrashAfter(3)]
    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=True)
    with pytest.raises(Crash):
        lightning_lib.Trainer(callbacks=callbacks, **kwargs).fit(model)
    assert load_file(f"{dirpath}/on_exception.ckpt")["global_step"] == 3
    # a successful run removes it
    lightning_lib.Trainer(callbacks=[OnExceptionCheckpoint(dirpath)], **kwargs).fit(model)
    assert list_committed(open_store(dirpath)) == []
    assert open_store(dirpath).list() == []
