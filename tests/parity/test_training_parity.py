"""Same program, same seed, CPU: lightning_lib gives pytorch_lightning's losses and metrics."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from tests.helpers import classification_data, make_classes, quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity

RTOL = 1e-5


def _scheduler_model(pl: Any, interval: str, frequency: int = 1, plateau: bool = False) -> Any:
    base = make_classes(pl)["ClassifierModel"]

    class Scheduled(base):  # type: ignore[misc, valid-type]
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
            if plateau:
                sched: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
                return {
                    "optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": interval},
                }
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "interval": interval, "frequency": frequency},
            }

    return Scheduled()


def _manual_model(pl: Any) -> Any:
    base = make_classes(pl)["ClassifierModel"]

    class Manual(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            opt_a, opt_b = self.optimizers()
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self(x), y)
            self.losses.append(loss.item())
            self.log("train_loss", loss)
            opt_a.zero_grad()
            opt_b.zero_grad()
            self.manual_backward(loss)
            opt_a.step()
            if batch_idx % 2 == 1:
                opt_b.step()
            sched = self.lr_schedulers()
            if self.trainer.is_last_batch:
                sched.step()
            return loss

        def configure_optimizers(self) -> Any:
            first = torch.optim.SGD(self.net[0].parameters(), lr=0.05)
            second = torch.optim.Adam(self.net[3].parameters(), lr=0.01)
            return [first, second], [torch.optim.lr_scheduler.StepLR(first, 1, gamma=0.5)]

    return Manual()


def _run(pl: Any, tmp_path: Any, case: str) -> dict[str, Any]:
    pl.seed_everything(1234)
    classes = make_classes(pl)
    trainer_kwargs: dict[str, Any] = {"max_epochs": 2, "num_sanity_val_steps": 2}
    datamodule = None
    callbacks: list[Any] = []
    if case == "plain":
        model = classes["ClassifierModel"]()
    elif case.startswith("sched"):
        _, interval, freq = case.split("-")
        model = _scheduler_model(pl, interval, int(freq))
    elif case == "plateau":
        model = _scheduler_model(pl, "epoch", plateau=True)
        trainer_kwargs["max_epochs"] = 3
    elif case == "accumulate_clip":
        model = classes["ClassifierModel"]()
        trainer_kwargs.update(
            accumulate_grad_batches=3, gradient_clip_val=0.5, gradient_clip_algorithm="norm"
        )
    elif case == "clip_value":
        model = classes["ClassifierModel"]()
        trainer_kwargs.update(gradient_clip_val=0.01, gradient_clip_algorithm="value")
    elif case == "manual":
        model = _manual_model(pl)
    elif case == "datamodule":
        model = classes["ClassifierModel"]()
        datamodule = classes["ClassifierDataModule"](batch_size=32)
    elif case == "early_stop_ckpt":
        model = classes["ClassifierModel"](lr=0.05)
        callbacks = [
            pl.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=0.5),
            pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="val_loss", save_top_k=2),
        ]
        trainer_kwargs.update(max_epochs=6, enable_checkpointing=True)
    elif case == "val_interval_max_steps":
        model = classes["ClassifierModel"]()
        trainer_kwargs.update(max_epochs=None, max_steps=25, val_check_interval=5, limit_val_batches=2)
    else:
        raise AssertionError(case)
    trainer = pl.Trainer(callbacks=callbacks, **quiet_trainer_kwargs(tmp_path, **trainer_kwargs))
    if datamodule is not None:
        trainer.fit(model, datamodule=datamodule)
        val = trainer.validate(model, datamodule=datamodule, verbose=False)
        test = trainer.test(model, datamodule=datamodule, verbose=False)
    else:
        train = DataLoader(classification_data(160, seed=0), batch_size=16, shuffle=True)
        val_loader = DataLoader(classification_data(64, seed=1), batch_size=16)
        trainer.fit(model, train, val_loader)
        val = trainer.validate(model, val_loader, verbose=False)
        test = trainer.test(model, val_loader, verbose=False)
    result = {
        "losses": list(model.losses),
        "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "validate": val,
        "test": test,
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "weights": [p.detach().clone() for p in model.parameters()],
    }
    for cb in callbacks:
        if isinstance(cb, pl.callbacks.EarlyStopping):
            result["stopped_epoch"] = cb.stopped_epoch
            result["wait_count"] = cb.wait_count
        if isinstance(cb, pl.callbacks.ModelCheckpoint):
            result["best_score"] = float(cb.best_model_score)
            result["best_name"] = cb.best_model_path.rsplit("/", 1)[-1]
            result["kept"] = sorted(p.rsplit("/", 1)[-1] for p in cb.best_k_models)
    return result


def _assert_close(ours: Any, ref: Any, path: str = "") -> None:
    if isinstance(ref, dict):
        assert set(ours) == set(ref), f"{path}: keys differ: {sorted(ours)} vs {sorted(ref)}"
        for key in ref:
            _assert_close(ours[key], ref[key], f"{path}.{key}")
    elif isinstance(ref, list):
        assert len(ours) == len(ref), f"{path}: length {len(ours)} vs {len(ref)}"
        for i, (a, b) in enumerate(zip(ours, ref)):
            _assert_close(a, b, f"{path}[{i}]")
    elif isinstance(ref, torch.Tensor):
        torch.testing.assert_close(ours, ref, rtol=RTOL, atol=1e-7, msg=path)
    elif isinstance(ref, float):
        assert ours == pytest.approx(ref, rel=RTOL, abs=1e-7), path
    else:
        assert ours == ref, path


@pytest.mark.parametrize(
    "case",
    [
        "plain",
        "sched-step-1",
        "sched-step-3",
        "sched-epoch-1",
        "plateau",
        "accumulate_clip",
        "clip_value",
        "manual",
        "datamodule",
        "early_stop_ckpt",
        "val_interval_max_steps",
    ],
)
def test_same_losses_and_metrics_as_lightning(tmp_path: Any, case: str) -> None:
    reference = _run(reference_lightning(), tmp_path / "pl", case)
    ours = _run(lightning_lib, tmp_path / "ours", case)
    assert len(reference["losses"]) > 5
    _assert_close(ours, reference)
