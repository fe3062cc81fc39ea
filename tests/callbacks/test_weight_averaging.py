"""WeightAveraging / EMAWeightAveraging: updates, validation on the average, checkpoints and resume, as in Lightning."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import get_ema_avg_fn
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import EMAWeightAveraging, OnExceptionCheckpoint, WeightAveraging
from tests.helpers import Crash, CrashAfter, classification_data, quiet_trainer_kwargs, reference_lightning


def _model(pl: ModuleType) -> Any:
    class AveragedNet(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
            self.val_losses: list[float] = []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.val_losses.append(loss.item())
            self.log("val_loss", loss)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    return AveragedNet()


def _fit(
    pl: ModuleType,
    root: Any,
    callback: Any,
    crash_at: int | None = None,
    ckpt_path: str | None = None,
    **trainer_args: Any,
) -> tuple[Any, Any]:
    pl.seed_everything(7)
    model = _model(pl)
    callbacks: list[Any] = [callback]
    if crash_at is not None:
        callbacks += [OnExceptionCheckpoint(root), CrashAfter(crash_at)]
    kwargs = quiet_trainer_kwargs(
        root,
        max_epochs=4,
        limit_train_batches=4,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        enable_checkpointing=crash_at is not None,
    )
    kwargs.update(trainer_args)
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    data = DataLoader(classification_data(64), batch_size=8)
    if crash_at is not None:
        with pytest.raises(Crash):
            trainer.fit(model, data, data)
    else:
        trainer.fit(model, data, data, ckpt_path=ckpt_path)
    return model, trainer


def _assert_same_state(ours: nn.Module, theirs: nn.Module) -> None:
    mine, other = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == other.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], other[key], msg=key)


def _ema_args() -> dict[str, Any]:
    return {"decay": 0.8, "update_every_n_steps": 2, "update_starting_at_step": 3}


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["ema", "swa", "epochs", "accumulate"])
def test_weights_and_validation_like_lightning(tmp_path: Any, kind: str) -> None:
    pl = reference_lightning()
    trainer_args: dict[str, Any] = {}

    def build(lib: ModuleType) -> Any:
        if kind == "ema":
            return lib.callbacks.EMAWeightAveraging(**_ema_args())
        if kind == "epochs":
            return lib.callbacks.EMAWeightAveraging(
                decay=0.5, update_every_n_steps=0, update_starting_at_epoch=1
            )
        return lib.callbacks.WeightAveraging()

    if kind == "accumulate":
        trainer_args["accumulate_grad_batches"] = 3
    ours, _ = _fit(lightning_lib, tmp_path / "ours", build(lightning_lib), **trainer_args)
    theirs, _ = _fit(pl, tmp_path / "theirs", build(pl), **trainer_args)
    _assert_same_state(ours, theirs)
    assert ours.val_losses == pytest.approx(theirs.val_losses)


@pytest.mark.parity
def test_checkpoint_holds_the_average_like_lightning(tmp_path: Any) -> None:
    pl = reference_lightning()
    ours_cb = EMAWeightAveraging(**_ema_args())
    _, our_trainer = _fit(lightning_lib, tmp_path / "ours", ours_cb)
    theirs_cb = pl.callbacks.EMAWeightAveraging(**_ema_args())
    _, their_trainer = _fit(pl, tmp_path / "theirs", theirs_cb)
    # saved after the fit: the averaged model is still held, so its state goes in
    our_trainer.save_checkpoint(tmp_path / "ours.ckpt")
    their_trainer.save_checkpoint(tmp_path / "theirs.ckpt")
    ours = torch.load(tmp_path / "ours.ckpt", weights_only=True)
    theirs = torch.load(tmp_path / "theirs.ckpt", weights_only=True)
    assert ours["callbacks"]["EMAWeightAveraging"] == theirs["callbacks"]["EMAWeightAveraging"]
    assert theirs["callbacks"]["EMAWeightAveraging"] == {"latest_update_step": 15}
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert ours[key].keys() == theirs[key].keys(), key
        for name, value in theirs[key].items():
            torch.testing.assert_close(ours[key][name], value, msg=f"{key}.{name}")


def test_resumed_fit_ends_with_the_same_weights(tmp_path: Any) -> None:
    reference, _ = _fit(lightning_lib, tmp_path / "ref", EMAWeightAveraging(**_ema_args()))
    _fit(lightning_lib, tmp_path / "run", EMAWeightAveraging(**_ema_args()), crash_at=10)
    path = str(tmp_path / "run" / "on_exception.ckpt")
    saved = torch.load(path, weights_only=True)
    assert saved["averaging_state"]["n_averaged"].item() == 3  # after step indices 4, 6 and 8
    resumed_cb = EMAWeightAveraging(**_ema_args())
    resumed, _ = _fit(lightning_lib, tmp_path / "run", resumed_cb, ckpt_path=path)
    assert resumed_cb.state_dict() == {"latest_update_step": 15}
    _assert_same_state(resumed, reference)


def test_checkpoint_without_averaging_state_warns(tmp_path: Any) -> None:
    _, trainer = _fit(lightning_lib, tmp_path / "plain", lightning_lib.Callback(), max_epochs=1)
    path = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(path)
    with pytest.warns(UserWarning, match="was not created with WeightAveraging"):
        _fit(lightning_lib, tmp_path / "plain", WeightAveraging(), ckpt_path=str(path), max_epochs=2)


def test_should_update_override_decides(tmp_path: Any) -> None:
    calls: list[tuple[int | None, int | None]] = []

    class EveryOther(WeightAveraging):
        def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
            calls.append((step_idx, epoch_idx))
            return step_idx is not None and step_idx % 2 == 1

    callback = EveryOther(avg_fn=get_ema_avg_fn(0.5))
    _fit(lightning_lib, tmp_path, callback, max_epochs=1)
    assert calls == [(0, None), (1, None), (2, None), (3, None), (None, 0)]
    assert callback._average_model is not None
    assert callback._average_model.n_averaged.item() == 2


def test_ema_should_update_rules() -> None:
    ema = EMAWeightAveraging(update_every_n_steps=3, update_starting_at_step=4, update_starting_at_epoch=2)
    assert [s for s in range(12) if ema.should_update(step_idx=s)] == [6, 9]
    assert [e for e in range(4) if ema.should_update(epoch_idx=e)] == [2, 3]
    assert not EMAWeightAveraging(update_every_n_steps=0).should_update(step_idx=0)
