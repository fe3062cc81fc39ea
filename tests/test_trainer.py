"""Trainer features: batch limits, validation scheduling, stopping rules, debug flags, predict and friends.

Counts were checked against pytorch_lightning 2.6 running the same programs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_lib as pl
from tests.helpers import BoringModel
from tests.support import CountingModel, loader, trainer_kwargs


def _fit(tmp_path: Any, model: Any = None, **kwargs: Any) -> tuple[pl.Trainer, Any]:
    model = model if model is not None else CountingModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, **kwargs))
    trainer.fit(model)
    return trainer, model


# ---- limits ----------------------------------------------------------------------------------------------
def test_limit_batches_as_a_count(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path, limit_train_batches=3, limit_val_batches=2)
    assert (trainer.global_step, model.train_steps, model.val_steps) == (3, 3, 2)
    assert trainer.num_training_batches == 3 and trainer.num_val_batches == [2]


def test_limit_batches_as_a_fraction(tmp_path: Path) -> None:
    # 32 training batches and 32 validation batches of 2 samples
    trainer, model = _fit(tmp_path, limit_train_batches=0.25, limit_val_batches=0.125)
    assert (trainer.global_step, model.train_steps, model.val_steps) == (8, 8, 4)
    assert trainer.num_training_batches == 8 and trainer.num_val_batches == [4]


def test_limit_zero_disables_validation_and_training(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path, limit_val_batches=0, num_sanity_val_steps=2)
    assert model.val_steps == 0 and trainer.global_step == 2
    trainer, model = _fit(tmp_path, limit_train_batches=0)
    assert model.train_steps == 0 and trainer.global_step == 0


def test_limit_test_and_predict_batches(tmp_path: Path) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_test_batches=3, limit_predict_batches=0.5))
    model = CountingModel()
    trainer.test(model, verbose=False)
    assert trainer.num_test_batches == [3]
    predictions = trainer.predict(model, loader(8))
    assert predictions is not None and len(predictions) == 2


# ---- validation scheduling -------------------------------------------------------------------------------
def test_val_check_interval_fraction(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path, limit_train_batches=8, val_check_interval=0.25)
    assert trainer.val_check_batch == 2
    assert (trainer.global_step, model.val_epochs) == (8, 4)


def test_val_check_interval_int(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path, max_epochs=2, limit_train_batches=8, val_check_interval=3)
    assert (trainer.global_step, model.val_epochs) == (16, 4)  # batches 3 and 6 of each epoch


def test_val_check_interval_counts_across_epochs_without_check_val_every_n_epoch(tmp_path: Path) -> None:
    trainer, model = _fit(
        tmp_path, max_epochs=3, limit_train_batches=4, val_check_interval=5, check_val_every_n_epoch=None
    )
    assert (trainer.global_step, model.val_epochs) == (12, 2)  # after batches 5 and 10 overall


def test_check_val_every_n_epoch(tmp_path: Path) -> None:
    class Model(CountingModel):
        def on_validation_epoch_start(self) -> None:
            super().on_validation_epoch_start()
            self.seen.setdefault("epochs", []).append(self.current_epoch)

    _, model = _fit(tmp_path, Model(), max_epochs=5, check_val_every_n_epoch=2)
    assert model.seen["epochs"] == [1, 3]


@pytest.mark.parametrize(("steps", "expected"), [(0, 0), (-1, 3), (2, 2), (5, 3)])
def test_num_sanity_val_steps(tmp_path: Path, steps: int, expected: int) -> None:
    class Model(CountingModel):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            if self.trainer.sanity_checking:
                self.seen["sanity"] = self.seen.get("sanity", 0) + 1
            return super().validation_step(batch, batch_idx)

    _, model = _fit(tmp_path, Model(), limit_train_batches=1, limit_val_batches=3, num_sanity_val_steps=steps)
    assert model.seen.get("sanity", 0) == expected
    assert model.val_steps == expected + 3


def test_sanity_check_does_not_touch_the_global_rng(tmp_path: Path) -> None:
    class Model(CountingModel):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            torch.rand(100)  # consumes the RNG
            return super().validation_step(batch, batch_idx)

        def on_train_start(self) -> None:
            self.seen["draw"] = torch.rand(1).item()

    pl.seed_everything(3, verbose=False)
    _, with_sanity = _fit(tmp_path, Model(), num_sanity_val_steps=2)
    pl.seed_everything(3, verbose=False)
    _, without = _fit(tmp_path, Model(), num_sanity_val_steps=0)
    assert with_sanity.seen["draw"] == without.seen["draw"]


# ---- stopping ----------------------------------------------------------------------------------------------
class _StopsAtOnce(CountingModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.trainer.should_stop = True
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, (1, 1)), ({"min_epochs": 3}, (6, 3)), ({"min_steps": 5}, (5, 3))],
)
def test_should_stop_honours_min_epochs_and_min_steps(
    tmp_path: Path, kwargs: dict[str, Any], expected: tuple[int, int]
) -> None:
    trainer, _ = _fit(tmp_path, _StopsAtOnce(), max_epochs=10, **kwargs)
    assert (trainer.global_step, trainer.current_epoch) == expected


def test_max_steps_stops_mid_epoch(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path, max_epochs=5, max_steps=3, limit_train_batches=2)
    # as in Lightning, the interrupted epoch still counts as finished
    assert (trainer.global_step, model.train_steps, trainer.current_epoch) == (3, 3, 2)


def test_max_epochs_zero_trains_nothing(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path, max_epochs=0)
    assert model.train_steps == 0 and trainer.global_step == 0


def test_max_time_stops_training(tmp_path: Path) -> None:
    class Slow(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            time.sleep(0.02)
            return super().training_step(batch, batch_idx)

    start = time.monotonic()
    trainer, _ = _fit(tmp_path, Slow(), max_epochs=1000, limit_train_batches=None, max_time={"seconds": 0.1})
    assert 1 <= trainer.global_step < 30  # an epoch has 32 batches
    assert trainer.current_epoch == 1  # the stopped epoch is finished, as in Lightning
    assert time.monotonic() - start < 5


def test_on_train_batch_start_returning_minus_one_skips_the_rest_of_the_epoch(tmp_path: Path) -> None:
    class Model(CountingModel):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
            return -1 if batch_idx == 2 else None

    trainer, model = _fit(tmp_path, Model(), max_epochs=2, limit_train_batches=5)
    # two batches per epoch; Lightning runs no validation after a skipped epoch
    assert (trainer.global_step, model.train_steps, trainer.current_epoch, model.val_epochs) == (4, 4, 2, 0)


# ---- debugging flags ---------------------------------------------------------------------------------------
def test_fast_dev_run_runs_one_batch_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    trainer = pl.Trainer(
        default_root_dir=root,
        fast_dev_run=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    model = CountingModel()
    trainer.fit(model)
    assert (trainer.global_step, model.train_steps, model.val_steps) == (1, 1, 1)
    assert trainer.current_epoch == 1
    trainer.validate(model, verbose=False)
    trainer.test(model, verbose=False)
    predictions = trainer.predict(model)
    assert predictions is not None and len(predictions) == 1
    assert model.val_steps == 2
    assert not root.exists() or list(root.rglob("*")) == []


def test_fast_dev_run_with_a_count(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path, fast_dev_run=3, limit_train_batches=None, limit_val_batches=None)
    assert (trainer.global_step, model.train_steps, model.val_steps) == (3, 3, 3)


def test_overfit_batches_repeats_the_same_unshuffled_batches(tmp_path: Path) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.seen.setdefault("firsts", []).append(batch[0, 0].item())
            return super().training_step(batch, batch_idx)

        def train_dataloader(self) -> Any:
            return torch.utils.data.DataLoader(loader().dataset, batch_size=2, shuffle=True)

    trainer = pl.Trainer(
        **trainer_kwargs(
            tmp_path, overfit_batches=2, max_epochs=2, limit_train_batches=None, limit_val_batches=None
        )
    )
    model = Model()
    trainer.fit(model)
    firsts = model.seen["firsts"]
    dataset = loader().dataset
    assert firsts[:2] == firsts[2:] == [dataset[0][0].item(), dataset[2][0].item()]
    assert trainer.num_training_batches == 2 and trainer.num_val_batches == [2]
    assert (trainer.global_step, model.val_steps) == (4, 4)


@pytest.mark.parametrize(("every", "expected"), [(0, (1, 1)), (1, (4, 4)), (2, (2, 2))])
def test_reload_dataloaders_every_n_epochs(tmp_path: Path, every: int, expected: tuple[int, int]) -> None:
    class Model(CountingModel):
        calls = (0, 0)

        def train_dataloader(self) -> Any:
            self.calls = (self.calls[0] + 1, self.calls[1])
            return super().train_dataloader()

        def val_dataloader(self) -> Any:
            self.calls = (self.calls[0], self.calls[1] + 1)
            return super().val_dataloader()

    _, model = _fit(
        tmp_path,
        Model(),
        max_epochs=4,
        limit_train_batches=1,
        num_sanity_val_steps=2,
        reload_dataloaders_every_n_epochs=every,
    )
    assert model.calls == expected


@pytest.mark.parametrize("inference_mode", [True, False])
def test_inference_mode_inside_validation_step(tmp_path: Path, inference_mode: bool) -> None:
    class Model(CountingModel):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            self.seen["mode"] = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())
            return super().validation_step(batch, batch_idx)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.seen["train_grad"] = torch.is_grad_enabled()
            return super().training_step(batch, batch_idx)

    model = Model()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, inference_mode=inference_mode))
    trainer.validate(model, verbose=False)
    assert model.seen["mode"] == (inference_mode, False)
    trainer.fit(model)
    assert model.seen["train_grad"] is True
    # the fit's validation runs under no_grad whatever inference_mode says, as in Lightning
    assert model.seen["mode"] == (False, False)


# ---- validate / test / predict -----------------------------------------------------------------------------
def test_validate_and_test_return_one_dict_per_loader(tmp_path: Path) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_val_batches=2, limit_test_batches=2))
    model = CountingModel()
    val = trainer.validate(model, verbose=False)
    test = trainer.test(model, verbose=False)
    assert list(val[0]) == ["val_loss"] and list(test[0]) == ["test_loss"]
    assert isinstance(val[0]["val_loss"], float)
    assert trainer.state.finished and trainer.state.stage is None


def test_validate_reuses_the_fitted_model(tmp_path: Path) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(
        ValueError, match=r"Expected a LightningModule for `trainer.validate\(\)`, received none"
    ):
        trainer.validate()
    model = CountingModel()
    trainer.fit(model)
    trainer.validate(verbose=False)
    assert model.val_steps == 2


def test_validate_without_val_dataloader_is_an_error(tmp_path: Path) -> None:
    class NoVal(CountingModel):
        val_dataloader = pl.LightningModule.val_dataloader

    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=r"Expected a val dataloader for `trainer.validate`"):
        trainer.validate(NoVal())
    trainer.fit(NoVal())  # fit simply skips validation
    assert trainer.global_step == 2


@pytest.mark.parametrize("run", ["fit", "validate", "test"])
def test_dataloader_hook_returning_none_is_an_error(tmp_path: Path, run: str) -> None:
    class Model(CountingModel):
        def val_dataloader(self) -> Any:
            return None

        def test_dataloader(self) -> Any:
            return None

    model = Model()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, num_sanity_val_steps=2))
    hook = "test" if run == "test" else "val"
    with pytest.raises(TypeError, match=rf"Expected `{hook}_dataloader\(\)` to return a dataloader.*None"):
        getattr(trainer, run)(model)
    assert model.train_steps == 0


def test_empty_list_of_eval_loaders_runs_nothing(tmp_path: Path) -> None:
    class Model(CountingModel):
        def val_dataloader(self) -> Any:
            return []

        def test_dataloader(self) -> Any:
            return []

    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    assert trainer.validate(Model(), verbose=False) == []
    assert trainer.test(Model(), verbose=False) == []


def test_predict_returns_the_step_outputs(tmp_path: Path) -> None:
    class Model(CountingModel):
        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            return {"idx": batch_idx, "out": self(batch)}

    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    predictions = trainer.predict(Model(), loader(6))
    assert predictions is not None
    assert [p["idx"] for p in predictions] == [0, 1, 2]
    assert predictions[0]["out"].shape == (2, 2)
    assert not predictions[0]["out"].requires_grad
    assert trainer.predict(Model(), loader(6), return_predictions=False) is None


def test_predict_with_several_loaders(tmp_path: Path) -> None:
    class Model(CountingModel):
        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return (dataloader_idx, batch_idx)

    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    predictions = trainer.predict(Model(), [loader(8), loader(4)])
    assert predictions == [[(0, 0), (0, 1), (0, 2), (0, 3)], [(1, 0), (1, 1)]]
    assert trainer.num_predict_batches == [4, 2]


def test_predict_without_a_loader_is_an_error(tmp_path: Path) -> None:
    class Model(CountingModel):
        predict_dataloader = pl.LightningModule.predict_dataloader

    with pytest.raises(ValueError, match=r"Expected a predict dataloader for `trainer.predict`"):
        pl.Trainer(**trainer_kwargs(tmp_path)).predict(Model())


def test_datamodule_and_dataloaders_together_are_refused(tmp_path: Path) -> None:
    from tests.helpers import ClassifierDataModule

    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=r"either dataloaders or a datamodule"):
        trainer.fit(CountingModel(), loader(), datamodule=ClassifierDataModule())
    with pytest.raises(ValueError, match=r"either dataloaders or a datamodule"):
        trainer.validate(CountingModel(), loader(), datamodule=ClassifierDataModule())


# ---- estimated_stepping_batches ----------------------------------------------------------------------------
class _Estimated(Exception):
    """Stops a fit right after configure_optimizers has read the estimate."""


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_epochs": 3}, 96),
        ({"max_steps": 7}, 7),
        ({"max_epochs": 3, "accumulate_grad_batches": 3}, 33),
        ({"max_epochs": 2, "limit_train_batches": 0.5}, 32),
        ({"max_epochs": -1, "max_time": "00:00:01:00"}, float("inf")),
    ],
)
def test_estimated_stepping_batches(tmp_path: Path, kwargs: dict[str, Any], expected: float) -> None:
    class Model(CountingModel):
        def configure_optimizers(self) -> Any:
            raise _Estimated(self.trainer.estimated_stepping_batches)

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, **{"limit_train_batches": None, **kwargs}))
    with pytest.raises(_Estimated) as info:
        trainer.fit(Model())
    assert info.value.args[0] == expected


# ---- state while running -----------------------------------------------------------------------------------
def test_stage_flags_while_running(tmp_path: Path) -> None:
    seen: list[tuple[str, bool, bool, bool, bool]] = []

    class Recorder(pl.Callback):
        def _record(self, trainer: pl.Trainer, where: str) -> None:
            seen.append((where, trainer.training, trainer.validating, trainer.testing, trainer.predicting))

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            self._record(trainer, "train")

        def on_validation_batch_start(self, trainer: Any, module: Any, *args: Any) -> None:
            self._record(trainer, "val")

        def on_test_batch_start(self, trainer: Any, module: Any, *args: Any) -> None:
            self._record(trainer, "test")

        def on_predict_batch_start(self, trainer: Any, module: Any, *args: Any) -> None:
            self._record(trainer, "predict")

    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, limit_train_batches=1, limit_test_batches=1, callbacks=[Recorder()])
    )
    model = CountingModel()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    trainer.predict(model, loader(2))
    assert seen == [
        ("train", True, False, False, False),
        ("val", False, True, False, False),
        ("test", False, False, True, False),
        ("predict", False, False, False, True),
    ]


def test_exception_in_training_calls_on_exception_and_marks_interrupted(tmp_path: Path) -> None:
    calls: list[str] = []

    class Recorder(pl.Callback):
        def on_exception(self, trainer: Any, module: Any, exception: BaseException) -> None:
            calls.append(type(exception).__name__)

    class Failing(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            raise KeyError("boom")

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, callbacks=[Recorder()]))
    with pytest.raises(KeyError, match=r"boom"):
        trainer.fit(Failing())
    assert calls == ["KeyError"]
    assert trainer.interrupted


def test_default_root_dir_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert trainer.default_root_dir == os.getcwd()
    assert trainer.log_dir == os.getcwd()


def test_several_train_loaders_are_cycled(tmp_path: Path) -> None:
    class Model(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            assert set(batch) == {"a", "b"}
            return self(batch["a"]).sum() + self(batch["b"]).sum()

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=None, limit_val_batches=0))
    trainer.fit(Model(), {"a": loader(8), "b": loader(4)})
    assert trainer.num_training_batches == 4 and trainer.global_step == 4
