"""What self.log produces: reductions, batch-size weighted means, the three metric views, loader suffixes.

Expected values were taken from pytorch_lightning 2.6 running the same programs.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib as pl
from lightning_lib.loop.results import (
    LoggedValue,
    ResultCollection,
    as_log_tensor,
    extract_batch_size,
    resolve_logging_levels,
    resolve_reduce_fx,
)
from lightning_lib.utilities.exceptions import MisconfigurationException
from tests.helpers import RandomDataset
from tests.support import CountingModel, floats, loader, trainer_kwargs


class _Logging(CountingModel):
    """Batches of 4, 4 and 2 samples; logs the batch index + 1 in many ways."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        value = float(batch_idx + 1)
        self.log("s", value, reduce_fx="sum", on_epoch=True)
        self.log("mx", value, reduce_fx="max", on_step=False, on_epoch=True)
        self.log("mn", torch.tensor(value), reduce_fx=torch.min, on_step=False, on_epoch=True, prog_bar=True)
        self.log("w", value, on_step=False, on_epoch=True, batch_size=batch_idx + 1)
        self.log("auto", value, on_step=False, on_epoch=True)
        self.log("both", value, on_step=True, on_epoch=True, prog_bar=True)
        self.log("nolog", value, logger=False, prog_bar=True)
        self.log("stp", value)
        return super().training_step(batch, batch_idx)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 10), batch_size=4)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("vs", float(batch_idx), on_step=True, prog_bar=True)
        self.log("ve", float(batch_idx))

    def on_train_epoch_end(self) -> None:
        self.log("ep", 7.0, prog_bar=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.at_last_batch_end = (
            floats(self.trainer.callback_metrics),
            floats(self.trainer.logged_metrics),
            dict(self.trainer.progress_bar_metrics),
        )


@pytest.fixture
def logged_fit(tmp_path: Path) -> tuple[pl.Trainer, _Logging]:
    model = _Logging()
    trainer = pl.Trainer(
        **trainer_kwargs(
            tmp_path,
            limit_train_batches=None,
            limit_val_batches=2,
            log_every_n_steps=1,
            logger=pl.loggers.CSVLogger(tmp_path),
        )
    )
    trainer.fit(model)
    return trainer, model


def _without_loss(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "train_loss"}


def test_reductions_and_batch_size_weighting(logged_fit: tuple[pl.Trainer, _Logging]) -> None:
    trainer, _ = logged_fit
    metrics = floats(trainer.callback_metrics)
    assert metrics["s"] == 6.0  # 1 + 2 + 3
    assert metrics["mx"] == 3.0
    assert metrics["mn"] == 1.0
    assert metrics["auto"] == pytest.approx((1 * 4 + 2 * 4 + 3 * 2) / 10)  # batch sizes inferred
    assert metrics["w"] == pytest.approx((1 * 1 + 2 * 2 + 3 * 3) / 6)  # explicit batch_size
    assert metrics["both_epoch"] == pytest.approx(1.8)


def test_callback_metrics_during_and_after_the_epoch(logged_fit: tuple[pl.Trainer, _Logging]) -> None:
    trainer, model = logged_fit
    callback, logged, pbar = model.at_last_batch_end
    assert _without_loss(callback) == {
        "both": 3.0,
        "both_step": 3.0,
        "nolog": 3.0,
        "s": 3.0,
        "s_step": 3.0,
        "stp": 3.0,
    }
    assert _without_loss(logged) == {"both_step": 3.0, "s_step": 3.0, "stp": 3.0}
    assert sorted(pbar) == ["both_step", "nolog"]

    assert _without_loss(floats(trainer.callback_metrics)) == pytest.approx(
        {
            "auto": 1.8,
            "both": 1.8,
            "both_epoch": 1.8,
            "both_step": 3.0,
            "ep": 7.0,
            "mn": 1.0,
            "mx": 3.0,
            "nolog": 3.0,
            "s": 6.0,
            "s_epoch": 6.0,
            "s_step": 3.0,
            "stp": 3.0,
            "ve": 0.5,
            "vs": 0.5,
            "vs_epoch": 0.5,
            "w": 14 / 6,
        }
    )
    assert _without_loss(floats(trainer.logged_metrics)) == pytest.approx(
        {
            "auto": 1.8,
            "both_epoch": 1.8,
            "both_step": 3.0,
            "ep": 7.0,
            "mn": 1.0,
            "mx": 3.0,
            "s_epoch": 6.0,
            "s_step": 3.0,
            "stp": 3.0,
            "ve": 0.5,
            "vs_epoch": 0.5,
            "vs_step": 1.0,
            "w": 14 / 6,
        }
    )
    assert trainer.progress_bar_metrics == pytest.approx(
        {
            "both_epoch": 1.8,
            "both_step": 3.0,
            "ep": 7.0,
            "mn": 1.0,
            "nolog": 3.0,
            "vs_epoch": 0.5,
            "vs_step": 1.0,
        }
    )
    assert all(isinstance(v, float) for v in trainer.progress_bar_metrics.values())


def test_validate_replaces_the_metrics(logged_fit: tuple[pl.Trainer, _Logging]) -> None:
    trainer, model = logged_fit
    results = trainer.validate(model, verbose=False)
    assert results == [{"vs_epoch": 0.5, "ve": 0.5}]
    assert floats(trainer.callback_metrics) == {"ve": 0.5, "vs": 0.5, "vs_epoch": 0.5}
    assert floats(trainer.logged_metrics) == {"ve": 0.5, "vs_epoch": 0.5, "vs_step": 1.0}
    assert trainer.progress_bar_metrics == {"vs_epoch": 0.5, "vs_step": 1.0}


def test_logged_rows_reach_the_csv(logged_fit: tuple[pl.Trainer, _Logging]) -> None:
    trainer, _ = logged_fit
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    step_rows = [r for r in rows if r["stp"]]
    assert [float(r["stp"]) for r in step_rows] == [1.0, 2.0, 3.0]
    assert [int(r["step"]) for r in step_rows] == [0, 1, 2]
    epoch_rows = [r for r in rows if r["s_epoch"]]
    assert len(epoch_rows) == 1 and float(epoch_rows[0]["s_epoch"]) == 6.0
    assert "nolog" not in rows[0]  # logger=False


# ---- several evaluation loaders ------------------------------------------------------------------------
class _TwoLoaders(CountingModel):
    def val_dataloader(self) -> Any:
        return [loader(8, seed=1), loader(4, seed=2)]

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.log("v", float(dataloader_idx + 1) + batch_idx, on_step=True)
        if dataloader_idx == 0:
            self.log("w", float(batch_idx), add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self.log("e", 5.0)


def test_several_val_loaders_metric_names(tmp_path: Path) -> None:
    model = _TwoLoaders()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None))
    trainer.validate(model, verbose=False)
    assert trainer.num_val_batches == [4, 2]
    assert floats(trainer.callback_metrics) == {
        "e": 5.0,
        "v/dataloader_idx_0": 2.5,
        "v/dataloader_idx_1": 2.5,
        "v_epoch/dataloader_idx_0": 2.5,
        "v_epoch/dataloader_idx_1": 2.5,
        "w": 1.5,
    }
    assert floats(trainer.logged_metrics) == {
        "e": 5.0,
        "v_epoch/dataloader_idx_0": 2.5,
        "v_epoch/dataloader_idx_1": 2.5,
        "v_step/dataloader_idx_0": 4.0,
        "v_step/dataloader_idx_1": 3.0,
        "w": 1.5,
    }


def test_several_val_loaders_results_per_loader(tmp_path: Path) -> None:
    model = _TwoLoaders()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None))
    results = trainer.validate(model, verbose=False)
    assert results == [
        {"v_epoch/dataloader_idx_0": 2.5, "w": 1.5, "e": 5.0},
        {"v_epoch/dataloader_idx_1": 2.5, "e": 5.0},
    ]


def test_same_name_from_two_loaders_without_suffix_is_refused(tmp_path: Path) -> None:
    class Model(_TwoLoaders):
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.log("w", float(batch_idx), add_dataloader_idx=False)

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None))
    with pytest.raises(ValueError, match=r"twice in `validation_step` with different arguments"):
        trainer.validate(Model(), verbose=False)


def test_several_test_loaders_during_fit_and_test(tmp_path: Path) -> None:
    class Model(_TwoLoaders):
        def test_dataloader(self) -> Any:
            return self.val_dataloader()

        def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.log("t", float(dataloader_idx + 1))

    model = Model()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None))
    trainer.fit(model)
    assert {"v/dataloader_idx_0", "v/dataloader_idx_1", "e", "w", "train_loss"} <= set(
        trainer.callback_metrics
    )
    trainer.test(model, verbose=False)
    assert floats(trainer.callback_metrics) == {"t/dataloader_idx_0": 1.0, "t/dataloader_idx_1": 2.0}
    assert trainer.num_test_batches == [4, 2]


def test_validation_results_are_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    trainer.validate(CountingModel(), verbose=True)
    assert "val_loss" in capsys.readouterr().out
    trainer.validate(CountingModel(), verbose=False)
    assert capsys.readouterr().out == ""


# ---- the building blocks ---------------------------------------------------------------------------------
def test_logging_levels_per_hook() -> None:
    assert resolve_logging_levels("training_step", "x", None, None) == (True, False)
    assert resolve_logging_levels("validation_step", "x", None, None) == (False, True)
    assert resolve_logging_levels("on_train_epoch_end", "x", None, None) == (False, True)
    assert resolve_logging_levels("on_train_batch_end", "x", False, True) == (False, True)
    with pytest.raises(ValueError, match=r"inside `on_fit_start`"):
        resolve_logging_levels("on_fit_start", "x", None, None)
    with pytest.raises(RuntimeError, match=r"inside `my_helper` is not supported"):
        resolve_logging_levels("my_helper", "x", None, None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("mean", "mean"), ("avg", "mean"), (torch.mean, "mean"), ("sum", "sum"), (sum, "sum"), (max, "max")],
)
def test_reduce_fx_aliases(given: Any, expected: str) -> None:
    assert resolve_reduce_fx("x", given) == expected


def test_reduce_fx_unhashable_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"reduce_fx=\{min,max,mean,sum\}\)` are supported.*received reduce_fx=\['sum'\]"
    ):
        resolve_reduce_fx("x", ["sum"])


def test_extract_batch_size() -> None:
    assert extract_batch_size(torch.zeros(5, 3)) == 5
    assert extract_batch_size({"a": "text", "b": [torch.zeros(7)]}) == 7
    assert extract_batch_size(torch.tensor(3.0)) == 1
    with pytest.raises(MisconfigurationException, match=r"could not infer the batch_size from the batch"):
        extract_batch_size({"a": "text"})


def test_logged_value_folds_many_steps_exactly() -> None:
    item = LoggedValue("training_step", "x", (False, True, False, True, "mean", True), None)
    for i in range(1000):
        item.update(torch.tensor(float(i)), batch_size=1 + i % 3)
    weights = torch.tensor([1 + i % 3 for i in range(1000)], dtype=torch.float32)
    expected = (torch.arange(1000.0) * weights).sum() / weights.sum()
    torch.testing.assert_close(item.epoch_value(), expected)
    item.reset()
    assert item.epoch_value() is None and not item.updated


def test_result_collection_hides_other_loaders_while_one_runs() -> None:
    results = ResultCollection(training=False)
    options = (False, True, False, True, "mean", True)
    for idx in (0, 1):
        results.dataloader_idx = idx
        results.log("validation_step", "v", torch.tensor(float(idx)), options, True, 1)
    results.dataloader_idx = 0
    assert set(results.metrics(on_step=False).callback) == {"v/dataloader_idx_0"}
    # outside any loader only values logged outside any loader count (Lightning's valid_items)
    results.dataloader_idx = None
    assert set(results.metrics(on_step=False).callback) == set()


def test_as_log_tensor_keeps_float64_and_reshapes() -> None:
    warnings: list[str] = []
    value = as_log_tensor("x", torch.tensor([[2.0]], dtype=torch.float64), None, warnings.append)
    assert value.shape == () and value.dtype == torch.float64 and not warnings
    value = as_log_tensor("x", torch.tensor(3, dtype=torch.int32), None, warnings.append)
    assert value.dtype == torch.float32 and "torch.int32" in warnings[0]
    value = as_log_tensor("x", True, None, warnings.append)
    assert float(value) == 1.0
