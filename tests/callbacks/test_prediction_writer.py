"""BasePredictionWriter: when it writes, with which batch indices and predictions, as pytorch_lightning does."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import BasePredictionWriter
from lightning_lib.callbacks.prediction_writer import WriteInterval
from lightning_lib.utilities.exceptions import MisconfigurationException
from tests.helpers import RandomDataset, make_classes, quiet_trainer_kwargs, reference_lightning


def _recording_writer(pl: ModuleType, interval: str) -> Any:
    class Recorder(pl.callbacks.BasePredictionWriter):
        def __init__(self) -> None:
            super().__init__(interval)
            self.calls: list[tuple[Any, ...]] = []

        def write_on_batch_end(
            self,
            trainer: Any,
            pl_module: Any,
            prediction: Any,
            batch_indices: Any,
            batch: Any,
            batch_idx: int,
            dataloader_idx: int,
        ) -> None:
            self.calls.append(("batch", prediction.clone(), list(batch_indices), batch_idx, dataloader_idx))

        def write_on_epoch_end(
            self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any
        ) -> None:
            self.calls.append(("epoch", _clone(predictions), [list(map(list, dl)) for dl in batch_indices]))

    return Recorder()


def _clone(predictions: Any) -> Any:
    if isinstance(predictions, torch.Tensor):
        return predictions.clone()
    return [_clone(p) for p in predictions]


def _predict(
    pl: ModuleType, tmp_path: Any, interval: str, loaders: int, return_predictions: bool, workers: int = 0
) -> tuple[list[tuple[Any, ...]], Any]:
    torch.manual_seed(0)
    model = make_classes(pl)["BoringModel"]()
    writer = _recording_writer(pl, interval)
    data = [
        DataLoader(RandomDataset(32, 20, seed=i), batch_size=4, shuffle=i == 1, num_workers=workers)
        for i in range(loaders)
    ]
    trainer = pl.Trainer(callbacks=[writer], limit_predict_batches=3, **quiet_trainer_kwargs(tmp_path))
    torch.manual_seed(1)  # the shuffled loader's order
    result = trainer.predict(
        model, dataloaders=data if loaders > 1 else data[0], return_predictions=return_predictions
    )
    return writer.calls, result


def _same(ours: Any, theirs: Any) -> None:
    if isinstance(ours, torch.Tensor):
        torch.testing.assert_close(ours, theirs)
    elif isinstance(ours, list | tuple):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            _same(a, b)
    else:
        assert ours == theirs


@pytest.mark.parity
@pytest.mark.parametrize("interval", ["batch", "epoch", "batch_and_epoch"])
@pytest.mark.parametrize("loaders", [1, 2])
@pytest.mark.parametrize("return_predictions", [True, False])
def test_writes_like_lightning(tmp_path: Any, interval: str, loaders: int, return_predictions: bool) -> None:
    pl = reference_lightning()
    ours, our_result = _predict(lightning_lib, tmp_path / "ours", interval, loaders, return_predictions)
    theirs, their_result = _predict(pl, tmp_path / "theirs", interval, loaders, return_predictions)
    _same(ours, theirs)
    _same(our_result, their_result)
    per_batch = [c for c in ours if c[0] == "batch"]
    assert len(per_batch) == (3 * loaders if WriteInterval(interval).on_batch else 0)
    assert len([c for c in ours if c[0] == "epoch"]) == (1 if WriteInterval(interval).on_epoch else 0)


@pytest.mark.parity
def test_batch_indices_with_workers_like_lightning(tmp_path: Any) -> None:
    pl = reference_lightning()
    ours, _ = _predict(lightning_lib, tmp_path / "ours", "batch_and_epoch", 2, False, workers=2)
    theirs, _ = _predict(pl, tmp_path / "theirs", "batch_and_epoch", 2, False, workers=2)
    _same(ours, theirs)
    assert ours[0][2] == [0, 1, 2, 3]


def test_predict_loop_state_during_and_after(tmp_path: Any) -> None:
    seen: dict[str, Any] = {}

    class Writer(BasePredictionWriter):
        def write_on_batch_end(self, trainer: Any, *args: Any) -> None:
            seen.setdefault("batch", []).append(list(trainer.predict_loop.current_batch_indices))

        def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            seen["epoch_indices"] = [list(dl) for dl in trainer.predict_loop.epoch_batch_indices]
            seen["kept"] = len(trainer.predict_loop.predictions)

    model = make_classes(lightning_lib)["BoringModel"]()
    trainer = lightning_lib.Trainer(
        callbacks=[Writer("batch")], limit_predict_batches=2, **quiet_trainer_kwargs(tmp_path)
    )
    trainer.predict(model, DataLoader(RandomDataset(32, 8), batch_size=3), return_predictions=False)
    assert seen == {"batch": [[0, 1, 2], [3, 4, 5]], "epoch_indices": [[]], "kept": 0}
    # after the run: nothing kept when predictions were not returned, no indices
    assert trainer.predict_loop.predictions == []
    assert trainer.predict_loop.epoch_batch_indices == []


def test_loader_without_indices_warns_once_and_still_writes(tmp_path: Any) -> None:
    class Iterable(torch.utils.data.IterableDataset):
        def __iter__(self) -> Any:
            return iter(torch.randn(6, 32).split(2))

    calls: list[Any] = []

    class Writer(BasePredictionWriter):
        def write_on_batch_end(
            self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, *args: Any
        ) -> None:
            calls.append(batch_indices)

    model = make_classes(lightning_lib)["BoringModel"]()
    trainer = lightning_lib.Trainer(callbacks=[Writer("batch")], **quiet_trainer_kwargs(tmp_path))
    with pytest.warns(
        UserWarning, match="Couldn't infer the batch indices fetched from your dataloader"
    ) as record:
        trainer.predict(model, DataLoader(Iterable(), batch_size=None), return_predictions=False)
    assert len([w for w in record if "Couldn't infer" in str(w.message)]) == 1
    assert calls == [[], [], []]


def test_invalid_interval_names_the_choices() -> None:
    # Lightning's type, so user code that catches MisconfigurationException sees it
    with pytest.raises(
        MisconfigurationException,
        match=r"`write_interval` should be one of \['batch', 'epoch', 'batch_and_epoch'\]",
    ):
        BasePredictionWriter("step")  # type: ignore[arg-type]


def test_dataloader_iter_is_refused(tmp_path: Any) -> None:
    class IterModel(make_classes(lightning_lib)["BoringModel"]):  # type: ignore[misc]
        def predict_step(self, dataloader_iter: Any) -> Any:
            return None

    trainer = lightning_lib.Trainer(callbacks=[BasePredictionWriter()], **quiet_trainer_kwargs(tmp_path))
    with pytest.raises(NotImplementedError, match="does not support using `dataloader_iter`"):
        trainer.predict(IterModel(), DataLoader(RandomDataset(32, 4), batch_size=2))


def test_the_users_loader_is_left_alone(tmp_path: Any) -> None:
    loader = DataLoader(RandomDataset(32, 8), batch_size=4)
    sampler = loader.batch_sampler

    class Writer(BasePredictionWriter):
        def write_on_batch_end(self, *args: Any) -> None:
            pass

    model = make_classes(lightning_lib)["BoringModel"]()
    lightning_lib.Trainer(callbacks=[Writer()], **quiet_trainer_kwargs(tmp_path)).predict(model, loader)
    assert loader.batch_sampler is sampler
