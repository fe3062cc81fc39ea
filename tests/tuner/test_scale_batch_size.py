"""The batch size search: the Tuner's ``scale_batch_size`` and the ``BatchSizeFinder`` callback.

The parity tests run the same search on pytorch_lightning and on lightning_lib (out-of-memory errors
are simulated with the allocator's message) and compare the size found, the attribute set, the loaders
the run goes on with and the Trainer's counters.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import BatchSizeFinder
from lightning_lib.demos.boring_classes import BoringDataModule, BoringModel, RandomDataset
from lightning_lib.tuner import Tuner
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.memory import is_oom_error
from tests.helpers import quiet_trainer_kwargs, reference_lightning

_OOM_MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB"


def _model_class(pl: ModuleType, oom_above: int | None = None, length: int = 64) -> type:
    demos = importlib.import_module(f"{pl.__name__}.demos.boring_classes")

    class SizedModel(demos.BoringModel):  # type: ignore[name-defined,misc]
        def __init__(self, batch_size: int = 2) -> None:
            super().__init__()
            self.batch_size = batch_size

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if oom_above is not None and len(batch) > oom_above:
                raise RuntimeError(_OOM_MESSAGE)
            return super().training_step(batch, batch_idx)

        def _loader(self) -> DataLoader:
            return DataLoader(demos.RandomDataset(32, length), batch_size=self.batch_size)

        def train_dataloader(self) -> DataLoader:
            return self._loader()

        def val_dataloader(self) -> DataLoader:
            return self._loader()

        def test_dataloader(self) -> DataLoader:
            return self._loader()

        def predict_dataloader(self) -> DataLoader:
            return self._loader()

    return SizedModel


def _search(pl: ModuleType, root: Any, oom_above: int | None = None, length: int = 64, **kwargs: Any) -> Any:
    model = _model_class(pl, oom_above, length)(batch_size=16)
    trainer = pl.Trainer(**quiet_trainer_kwargs(root, max_epochs=1))
    tuner = importlib.import_module(f"{pl.__name__}.tuner").Tuner(trainer)
    found = tuner.scale_batch_size(model, **kwargs)
    val = trainer.val_dataloaders
    return (
        found,
        model.batch_size,
        trainer.train_dataloader.batch_size if trainer.train_dataloader is not None else None,
        val.batch_size if val is not None else None,
        trainer.global_step,
        trainer.current_epoch,
    )


@pytest.mark.parity
@pytest.mark.parametrize("mode", ["power", "binsearch"])
@pytest.mark.parametrize(
    ("init_val", "max_trials", "oom_above", "length"),
    [(4, 2, None, 64), (17, 2, None, 64), (2, 25, None, 64), (2, 25, 20, 200), (40, 10, 20, 200)],
)
def test_the_search_finds_what_lightning_finds(
    tmp_path: Any, mode: str, init_val: int, max_trials: int, oom_above: int | None, length: int
) -> None:
    kwargs = {"mode": mode, "init_val": init_val, "max_trials": max_trials, "steps_per_trial": 2}
    expected = _search(reference_lightning(), tmp_path / "pl", oom_above, length, **kwargs)
    assert _search(lightning_lib, tmp_path / "ours", oom_above, length, **kwargs) == expected


@pytest.mark.parity
@pytest.mark.parametrize("method", ["validate", "test", "predict"])
def test_the_search_runs_the_evaluation_loops_like_lightning(tmp_path: Any, method: str) -> None:
    def run(pl: ModuleType, root: Any) -> tuple[Any, ...]:
        model = _model_class(pl)(batch_size=2)
        trainer = pl.Trainer(**quiet_trainer_kwargs(root, max_epochs=100))
        tuner = importlib.import_module(f"{pl.__name__}.tuner").Tuner(trainer)
        found = tuner.scale_batch_size(model, max_trials=4, method=method)
        loop = getattr(trainer, f"{method}_loop")
        return found, model.batch_size, trainer.global_step, loop.batch_progress.current.completed

    assert (
        run(lightning_lib, tmp_path / "ours") == run(reference_lightning(), tmp_path / "pl") == (16, 16, 0, 0)
    )


@pytest.mark.parity
@pytest.mark.parametrize("method", ["fit", "validate", "test", "predict"])
def test_the_callback_runs_with_the_size_found_like_lightning(tmp_path: Any, method: str) -> None:
    def run(pl: ModuleType, root: Any) -> tuple[Any, ...]:
        model = _model_class(pl)(batch_size=2)
        finder = pl.callbacks.BatchSizeFinder(max_trials=4)
        trainer = pl.Trainer(**quiet_trainer_kwargs(root, max_epochs=2, callbacks=[finder]))
        getattr(trainer, method)(model)
        loop = getattr(trainer, f"{method}_loop")
        completed = (
            loop.epoch_loop.batch_progress.total.completed
            if method == "fit"
            else loop.batch_progress.current.completed
        )
        return (
            finder.optimal_batch_size,
            model.batch_size,
            trainer.global_step,
            trainer.current_epoch,
            completed,
        )

    assert run(lightning_lib, tmp_path / "ours") == run(reference_lightning(), tmp_path / "pl")


def test_the_model_and_trainer_are_put_back(tmp_path: Any) -> None:
    model = _model_class(lightning_lib)(batch_size=2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = lightning_lib.Trainer(default_root_dir=tmp_path, max_epochs=1)
    names = ["loggers", "callbacks", "global_step", "max_steps", "limit_train_batches", "limit_val_batches"]
    before = {name: getattr(trainer, name) for name in names}
    progress = trainer.fit_loop.state_dict()
    Tuner(trainer).scale_batch_size(model, max_trials=64)
    assert {name: getattr(trainer, name) for name in names} == before
    assert trainer.fit_loop.state_dict() == progress
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value)
    # no temporary checkpoint: only the logger's folder, which Lightning's logger also creates at fit start
    assert {path.name for path in tmp_path.iterdir()} <= {"lightning_logs"}
    assert not [path for path in tmp_path.rglob("*") if ".ckpt" in path.name]


class _SizedDataModule(BoringDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.random_train, batch_size=self.hparams.batch_size)


def test_the_size_is_set_where_it_is_found(tmp_path: Any) -> None:
    """The model's hparams, and the datamodule (whose value is read first), all get the size found."""

    class HparamsModel(BoringModel):
        def __init__(self, batch_size: int) -> None:
            super().__init__()
            self.save_hyperparameters()

    model = HparamsModel(batch_size=2)
    datamodule = _SizedDataModule(batch_size=2)
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=1))
    found = Tuner(trainer).scale_batch_size(model, datamodule=datamodule, steps_per_trial=2, max_trials=4)
    assert found == model.hparams.batch_size == datamodule.hparams.batch_size == 16
    assert trainer.train_dataloader.batch_size == 16 and trainer.datamodule is datamodule


def test_a_model_with_the_field_twice_is_warned_about(tmp_path: Any) -> None:
    class Twice(BoringModel):
        def __init__(self, batch_size: int = 1) -> None:
            super().__init__()
            self.batch_size = 1
            self.save_hyperparameters()

    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, max_steps=1))
    with pytest.warns(UserWarning, match="are mutually exclusive"):
        Tuner(trainer).scale_batch_size(Twice(), max_trials=1)


def test_other_runtime_errors_are_not_taken_for_out_of_memory(tmp_path: Any) -> None:
    class Broken(BoringModel):
        batch_size = 2

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            raise RuntimeError("shape mismatch")

    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=1))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        Tuner(trainer).scale_batch_size(Broken())
    assert is_oom_error(RuntimeError(_OOM_MESSAGE))
    assert is_oom_error(
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
    )
    assert not is_oom_error(RuntimeError("out of memory"))


def test_no_trials_keeps_the_initial_size(tmp_path: Any) -> None:
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1))
    assert Tuner(trainer).scale_batch_size(_model_class(lightning_lib)(batch_size=2), max_trials=0) == 2


def test_the_callback_leaves_the_validation_batches_alone(tmp_path: Any) -> None:
    model = _model_class(lightning_lib)(batch_size=16)
    finder = BatchSizeFinder(steps_per_trial=2, max_trials=1)
    trainer = lightning_lib.Trainer(
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, num_sanity_val_steps=0, callbacks=[finder])
    )
    trainer.fit(model)
    assert trainer.num_val_batches == [len(trainer.val_dataloaders)] and trainer.num_val_batches != [2]


def test_misconfigurations_are_refused_before_any_trial(tmp_path: Any) -> None:
    model = _model_class(lightning_lib)(batch_size=2)
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=1))
    tuner = Tuner(trainer)
    with pytest.raises(ValueError, match="should be either of"):
        tuner.scale_batch_size(model, mode="ThisModeDoesNotExist")
    with pytest.raises(ValueError, match="method 'prediction' is invalid"):
        tuner.scale_batch_size(model, method="prediction")  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match="please consider setting `dataloaders` instead"):
        tuner.scale_batch_size(model, train_dataloaders=model.train_dataloader(), method="validate")
    with pytest.raises(MisconfigurationException, match="`train_dataloaders` and `val_dataloaders` instead"):
        tuner.scale_batch_size(model, dataloaders=model.val_dataloader())
    with pytest.raises(MisconfigurationException, match="dataloaders passed directly"):
        tuner.scale_batch_size(model, train_dataloaders=model.train_dataloader())
    with pytest.raises(MisconfigurationException, match="Field size not found"):
        tuner.scale_batch_size(model, batch_arg_name="size")

    class TwoValLoaders(BoringModel):
        batch_size = 2

        def val_dataloader(self) -> Any:
            return [super().val_dataloader(), super().val_dataloader()]

    with pytest.raises(MisconfigurationException, match="multiple val dataloaders"):
        tuner.scale_batch_size(TwoValLoaders(), method="validate")
    ddp = lightning_lib.Trainer(devices=2, strategy="ddp", accelerator="cpu")
    with pytest.raises(MisconfigurationException, match="not supported with distributed strategies"):
        BatchSizeFinder().setup(ddp, BoringModel())
    with pytest.raises(ValueError, match="currently not supported with distributed strategies"):
        Tuner(ddp).scale_batch_size(model)
    configured = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, callbacks=[BatchSizeFinder()]))
    with pytest.raises(ValueError, match="already configured with a `BatchSizeFinder`"):
        Tuner(configured).scale_batch_size(model)
    assert trainer.global_step == 0 and model.batch_size == 2


def test_fast_dev_run_skips_the_search(tmp_path: Any) -> None:
    model = _model_class(lightning_lib)(batch_size=2)
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, fast_dev_run=True))
    with pytest.warns(UserWarning, match="Skipping batch size scaler"):
        assert Tuner(trainer).scale_batch_size(model) is None
    assert model.batch_size == 2


def test_random_dataset_is_the_demo_one() -> None:
    assert len(RandomDataset(32, 64)) == 64
