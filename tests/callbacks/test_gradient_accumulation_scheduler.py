"""GradientAccumulationScheduler: the accumulation factor follows the schedule per epoch, as in Lightning."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import GradientAccumulationScheduler, OnExceptionCheckpoint
from tests.helpers import (
    Crash,
    CrashAfter,
    classification_data,
    make_classes,
    quiet_trainer_kwargs,
    reference_lightning,
)


def _fit(
    pl: ModuleType,
    root: Any,
    schedule: dict[int, int],
    crash_at: int | None = None,
    ckpt_path: str | None = None,
) -> tuple[Any, Any, list[tuple[int, int, int]]]:
    pl.seed_everything(3)
    seen: list[tuple[int, int, int]] = []

    class Recorder(pl.Callback):
        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            seen.append((trainer.current_epoch, trainer.accumulate_grad_batches, trainer.global_step))

    callbacks: list[Any] = [pl.callbacks.GradientAccumulationScheduler(dict(schedule)), Recorder()]
    if crash_at is not None:
        callbacks += [OnExceptionCheckpoint(root), CrashAfter(crash_at)]
    model = make_classes(pl)["ClassifierModel"]()
    # 7 batches an epoch: windows of 2 and 3 leave a remainder that the epoch's last batch steps
    kwargs = quiet_trainer_kwargs(
        root,
        max_epochs=4,
        limit_train_batches=7,
        limit_val_batches=0,
        enable_checkpointing=crash_at is not None,
    )
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    data = DataLoader(classification_data(64), batch_size=8, shuffle=True)
    if crash_at is not None:
        with pytest.raises(Crash):
            trainer.fit(model, data)
    else:
        trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer, seen


@pytest.mark.parity
@pytest.mark.parametrize("schedule", [{1: 2, 3: 3}, {0: 3}, {2: 2}])
def test_same_steps_and_weights_as_lightning(tmp_path: Any, schedule: dict[int, int]) -> None:
    pl = reference_lightning()
    ours, our_trainer, our_seen = _fit(lightning_lib, tmp_path / "ours", schedule)
    theirs, their_trainer, their_seen = _fit(pl, tmp_path / "theirs", schedule)
    assert our_seen == their_seen
    assert our_trainer.global_step == their_trainer.global_step
    assert our_trainer.accumulate_grad_batches == their_trainer.accumulate_grad_batches
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b)


def test_epochs_follow_the_schedule(tmp_path: Any) -> None:
    _, trainer, seen = _fit(lightning_lib, tmp_path, {1: 2, 3: 3})
    factors = {epoch: factor for epoch, factor, _ in seen}
    assert factors == {0: 1, 1: 2, 2: 2, 3: 3}
    # per epoch: 7 steps, then ceil(7 / 2) = 4, 4, then ceil(7 / 3) = 3
    assert trainer.global_step == 7 + 4 + 4 + 3


def test_a_fit_resumed_mid_epoch_keeps_that_epoch_s_factor(tmp_path: Any) -> None:
    reference, ref_trainer, _ = _fit(lightning_lib, tmp_path / "ref", {1: 2})
    # epoch 1 accumulates 2 batches: step 9 ends its second window (batches 0-3), a window boundary
    _fit(lightning_lib, tmp_path / "run", {1: 2}, crash_at=9)
    model, trainer, seen = _fit(
        lightning_lib, tmp_path / "run", {1: 2}, ckpt_path=str(tmp_path / "run" / "on_exception.ckpt")
    )
    assert seen[0][:2] == (1, 2)
    assert trainer.global_step == ref_trainer.global_step
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)


def test_schedule_and_factors() -> None:
    given = {2: 4, 5: 8}
    callback = GradientAccumulationScheduler(given)
    assert callback.scheduling == {0: 1, 2: 4, 5: 8} and given is callback.scheduling  # Lightning fills it in
    assert callback.epochs == [0, 2, 5]
    assert [callback.get_accumulate_grad_batches(e) for e in range(7)] == [1, 1, 4, 4, 4, 8, 8]
    assert callback.going_to_accumulate_grad_batches()
    assert not GradientAccumulationScheduler({0: 1}).going_to_accumulate_grad_batches()


@pytest.mark.parametrize(
    ("schedule", "error", "match"),
    [
        ({}, TypeError, "Empty dict cannot be interpreted correct"),
        ({-1: 2}, ValueError, r"Epoch should be an int greater than or equal to 0. Got \[-1\]"),
        ({"1": 2}, ValueError, "Epoch should be an int"),
        ({1: 0}, ValueError, r"Accumulation factor should be an int greater than 0. Got \[0\]"),
        ({1: 2.5}, ValueError, "Accumulation factor should be an int"),
    ],
)
def test_invalid_schedules(schedule: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        GradientAccumulationScheduler(schedule)


def test_refused_with_the_trainer_s_own_accumulation(tmp_path: Any) -> None:
    model = make_classes(lightning_lib)["BoringModel"]()
    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2, accumulate_grad_batches=2)
    trainer = lightning_lib.Trainer(callbacks=[GradientAccumulationScheduler({0: 2})], **kwargs)
    with pytest.raises(ValueError, match="Either remove `accumulate_grad_batches` from the Trainer"):
        trainer.fit(model)


def test_refused_with_manual_optimization(tmp_path: Any) -> None:
    class Manual(make_classes(lightning_lib)["BoringModel"]):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> None:
            return None

    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer = lightning_lib.Trainer(callbacks=[GradientAccumulationScheduler({0: 2})], **kwargs)
    with pytest.raises(RuntimeError, match=r"not supported for\s+manual optimization"):
        trainer.fit(Manual())


def test_warns_when_the_optimizer_hooks_are_overridden(tmp_path: Any) -> None:
    class Overriding(make_classes(lightning_lib)["BoringModel"]):  # type: ignore[misc]
        def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
            optimizer.zero_grad()

    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer = lightning_lib.Trainer(callbacks=[GradientAccumulationScheduler({0: 2})], **kwargs)
    with pytest.warns(UserWarning, match="the hooks will not be called on every batch"):
        trainer.fit(Overriding())
