"""What the checkpoint hooks receive, where a fit resumed from an epoch-end checkpoint goes on, and the
closure ``optimizer_step`` receives: the same program on pytorch_lightning and lightning_lib."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import lightning_lib
from lightning_lib.checkpoint._format import LIGHTNING_FORMAT_VERSION
from tests.helpers import make_classes, quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity


def _libs() -> list[ModuleType]:
    return [reference_lightning(), lightning_lib]


def _recording(pl: ModuleType, events: list[Any]) -> tuple[Any, Any]:
    base = make_classes(pl)["BoringModel"]

    class Model(base):  # type: ignore[misc, valid-type]
        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            events.append(("save", sorted(checkpoint), checkpoint["pytorch-lightning_version"]))
            self.saved = checkpoint

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            events.append(("load", sorted(checkpoint), checkpoint["pytorch-lightning_version"]))

        def on_train_start(self) -> None:
            events.append(("train_start", self.current_epoch, self.global_step))

        def on_train_epoch_start(self) -> None:
            events.append(("epoch_start", self.current_epoch))

        def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
            events.append(("batch", self.current_epoch, batch_idx))

        def on_train_epoch_end(self) -> None:
            events.append(("epoch_end", self.current_epoch))

    class Stateful(pl.Callback):  # type: ignore[misc, name-defined]
        def state_dict(self) -> dict[str, Any]:
            events.append("Callback.state_dict")
            return {"foo": True}

    return Model, Stateful


def _fit_and_resume(pl: ModuleType, tmp_path: Path, first: dict[str, Any], second: dict[str, Any]) -> Any:
    events: list[Any] = []
    model_cls, callback_cls = _recording(pl, events)
    kwargs = quiet_trainer_kwargs(tmp_path, enable_checkpointing=True, limit_val_batches=0)
    trainer = pl.Trainer(callbacks=[callback_cls()], **first, **kwargs)
    model = model_cls()
    trainer.fit(model)
    path = trainer.checkpoint_callback.best_model_path
    saved_keys = sorted(model.saved)  # after the fit: nothing was added to the dict the hook received
    events.append("----")
    resumed = model_cls()
    pl.Trainer(callbacks=[callback_cls()], **second, **kwargs).fit(resumed, ckpt_path=path)
    return events, saved_keys, path


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # max_steps ended the epoch before its last batch: the epoch goes on at its next batch
        ({"max_steps": 1}, {"max_steps": 3}),
        # the epoch ran all its batches: on_train_start sees the next epoch
        ({"max_epochs": 1, "limit_train_batches": 2}, {"max_epochs": 2, "limit_train_batches": 2}),
    ],
    ids=["max_steps_mid_epoch", "epoch_end"],
)
def test_checkpoint_hooks_and_epoch_end_resume_match_lightning(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any]
) -> None:
    runs = []
    for pl in _libs():
        events, saved_keys, path = _fit_and_resume(pl, tmp_path / pl.__name__, first, second)
        # each library's hooks see its own version, as Lightning's see pytorch_lightning's
        runs.append(([e if e[0] not in ("save", "load") else e[:2] for e in events], saved_keys))
        assert all(e[2] == pl.__version__ for e in events if e[0] in ("save", "load"))
    assert runs[0] == runs[1]
    # the file keeps the Lightning format stamp pytorch_lightning migrates by, and this library's resume state
    on_disk = torch.load(path, weights_only=True)
    assert on_disk["pytorch-lightning_version"] == LIGHTNING_FORMAT_VERSION
    assert {"lightning_lib", "lightning_lib_version", "rng_states"} <= set(on_disk)


def _closure_model(pl: ModuleType, received: list[Any]) -> Any:
    closure_cls = importlib.import_module(f"{pl.__name__}.loops.optimization.automatic").Closure
    base = make_classes(pl)["BoringModel"]

    class Model(base):  # type: ignore[misc, valid-type]
        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any) -> None:
            loss = optimizer_closure()
            received.append((isinstance(optimizer_closure, closure_cls), loss.requires_grad))
            if batch_idx % 2 == 0:
                optimizer.step()

    return Model()


def test_optimizer_step_receives_lightnings_closure(tmp_path: Path) -> None:
    seen = []
    for pl in _libs():
        received: list[Any] = []
        trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, max_steps=4, limit_val_batches=0))
        trainer.fit(_closure_model(pl, received))
        seen.append((received, trainer.global_step))
    assert seen[0] == seen[1]
    assert seen[1][0] == [(True, False)] * 4
