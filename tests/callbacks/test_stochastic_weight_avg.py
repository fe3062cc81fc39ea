"""StochasticWeightAveraging: the SWALR swap, the average, the BatchNorm pass and resuming, as in Lightning."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import SWALR
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import OnExceptionCheckpoint, StochasticWeightAveraging
from lightning_lib.utilities.exceptions import MisconfigurationException
from tests.helpers import Crash, CrashAfter, classification_data, quiet_trainer_kwargs, reference_lightning


def _model(pl: ModuleType, batch_norm: bool, scheduler: bool) -> Any:
    class SwaModel(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            norm = nn.BatchNorm1d(16) if batch_norm else nn.Identity()
            self.net = nn.Sequential(nn.Linear(32, 16), norm, nn.ReLU(), nn.Linear(16, 10))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
            if not scheduler:
                return optimizer
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)]

    return SwaModel()


def _fit(
    pl: ModuleType,
    root: Any,
    callback: Any,
    batch_norm: bool = True,
    scheduler: bool = True,
    crash_at: int | None = None,
    ckpt_path: str | None = None,
) -> tuple[Any, Any, list[float]]:
    pl.seed_everything(3)
    model = _model(pl, batch_norm, scheduler)
    lrs: list[float] = []

    class LrRecorder(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    callbacks: list[Any] = [callback, LrRecorder()]
    if crash_at is not None:
        callbacks += [OnExceptionCheckpoint(root), CrashAfter(crash_at)]
    kwargs = quiet_trainer_kwargs(
        root,
        max_epochs=6,
        limit_train_batches=4,
        limit_val_batches=0,
        enable_checkpointing=crash_at is not None,
    )
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    data = DataLoader(classification_data(64), batch_size=8)
    if crash_at is not None:
        with pytest.raises(Crash):
            trainer.fit(model, data)
    else:
        trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer, lrs


def _args() -> dict[str, Any]:
    return {"swa_lrs": 0.05, "swa_epoch_start": 3, "annealing_epochs": 2}


def _assert_same_state(ours: nn.Module, theirs: nn.Module) -> None:
    mine, other = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == other.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], other[key], msg=key)


@pytest.mark.parity
@pytest.mark.parametrize(("batch_norm", "scheduler"), [(True, True), (False, False), (True, False)])
def test_weights_and_schedule_like_lightning(tmp_path: Any, batch_norm: bool, scheduler: bool) -> None:
    pl = reference_lightning()
    ours_cb = StochasticWeightAveraging(**_args())
    theirs_cb = pl.callbacks.StochasticWeightAveraging(**_args())
    ours, our_trainer, our_lrs = _fit(lightning_lib, tmp_path / "ours", ours_cb, batch_norm, scheduler)
    theirs, their_trainer, their_lrs = _fit(pl, tmp_path / "theirs", theirs_cb, batch_norm, scheduler)
    assert our_lrs == pytest.approx(their_lrs)
    _assert_same_state(ours, theirs)
    assert our_trainer.global_step == their_trainer.global_step
    assert (our_trainer.current_epoch, our_trainer.max_epochs) == (
        their_trainer.current_epoch,
        their_trainer.max_epochs,
    )
    assert ours_cb.n_averaged == theirs_cb.n_averaged == 4
    assert isinstance(our_trainer.lr_scheduler_configs[0].scheduler, SWALR)
    assert our_trainer.accumulate_grad_batches == 1


@pytest.mark.parity
def test_checkpoint_state_like_lightning(tmp_path: Any) -> None:
    pl = reference_lightning()
    ours_cb = StochasticWeightAveraging(**_args())
    theirs_cb = pl.callbacks.StochasticWeightAveraging(**_args())
    _fit(lightning_lib, tmp_path / "ours", ours_cb)
    _fit(pl, tmp_path / "theirs", theirs_cb)
    ours, theirs = ours_cb.state_dict(), theirs_cb.state_dict()
    assert (
        ours.keys()
        == theirs.keys()
        == {
            "n_averaged",
            "latest_update_epoch",
            "scheduler_state",
            "average_model_state",
        }
    )
    assert (ours["n_averaged"], ours["latest_update_epoch"]) == (
        theirs["n_averaged"],
        theirs["latest_update_epoch"],
    )
    assert ours["scheduler_state"] == theirs["scheduler_state"]
    for key, value in theirs["average_model_state"].items():
        torch.testing.assert_close(ours["average_model_state"][key], value)


@pytest.mark.parity
def test_resumed_in_the_middle_of_swa_ends_like_lightning(tmp_path: Any) -> None:
    pl = reference_lightning()
    theirs, _, _ = _fit(pl, tmp_path / "theirs", pl.callbacks.StochasticWeightAveraging(**_args()))
    # step 18 is in epoch 4 (0-based), after the updates at the starts of epochs 2, 3 and 4
    _fit(lightning_lib, tmp_path / "run", StochasticWeightAveraging(**_args()), crash_at=18)
    path = str(tmp_path / "run" / "on_exception.ckpt")
    state = torch.load(path, weights_only=True)["callbacks"]["StochasticWeightAveraging"]
    assert state["n_averaged"] == 3 and state["latest_update_epoch"] == 4
    resumed_cb = StochasticWeightAveraging(**_args())
    resumed, trainer, _ = _fit(lightning_lib, tmp_path / "run", resumed_cb, ckpt_path=path)
    _assert_same_state(resumed, theirs)
    assert resumed_cb.n_averaged == 4
    assert isinstance(trainer.lr_scheduler_configs[0].scheduler, SWALR)


def test_float_start_is_a_fraction_of_max_epochs(tmp_path: Any) -> None:
    callback = StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=0.5)
    _fit(lightning_lib, tmp_path, callback, batch_norm=False)
    assert callback.swa_start == 2 and callback.swa_end == 5
    assert callback.n_averaged == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"swa_lrs": 0.1, "swa_epoch_start": 0}, "swa_epoch_start should be a >0 integer"),
        ({"swa_lrs": 0.1, "swa_epoch_start": 1.5}, "swa_epoch_start should be a >0 integer"),
        ({"swa_lrs": 0}, "`swa_lrs` should a positive float"),
        ({"swa_lrs": [0.1, -0.1]}, "`swa_lrs` should a positive float"),
        ({"swa_lrs": 0.1, "avg_fn": 3}, "`avg_fn` should be callable"),
        ({"swa_lrs": 0.1, "device": 3}, "device is expected to be a torch.device or a str"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        StochasticWeightAveraging(**kwargs)


def test_more_than_one_optimizer_is_refused(tmp_path: Any) -> None:
    class TwoOptimizers(lightning_lib.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(32, 10), nn.Linear(32, 10)
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> None:
            return None

        def configure_optimizers(self) -> Any:
            return [
                torch.optim.SGD(self.a.parameters(), lr=0.1),
                torch.optim.SGD(self.b.parameters(), lr=0.1),
            ]

    trainer = lightning_lib.Trainer(
        callbacks=[StochasticWeightAveraging(swa_lrs=0.1)], **quiet_trainer_kwargs(tmp_path, max_epochs=1)
    )
    with pytest.raises(MisconfigurationException, match="SWA currently works with 1 `optimizer`"):
        trainer.fit(TwoOptimizers(), DataLoader(classification_data(16), batch_size=8))


def test_float_start_with_unbounded_epochs_is_refused(tmp_path: Any) -> None:
    callback = StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=0.5)
    trainer = lightning_lib.Trainer(
        callbacks=[callback], **quiet_trainer_kwargs(tmp_path, max_epochs=-1, max_steps=4)
    )
    with pytest.raises(MisconfigurationException, match="not supported when `max_epochs=-1`"):
        trainer.fit(_model(lightning_lib, False, False), DataLoader(classification_data(16), batch_size=8))
