"""Strategies and plugins at Lightning's paths: the supported ones run, the others refuse clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

import lightning_lib as pl
from lightning_lib import plugins, strategies
from lightning_lib.demos.boring_classes import BoringModel, ManualOptimBoringModel
from tests.helpers import quiet_trainer_kwargs


@pytest.mark.parametrize(
    ("cls", "feature"),
    [
        (strategies.DeepSpeedStrategy, "DeepSpeed"),
        (strategies.FSDPStrategy, "fully sharded"),
        (strategies.ModelParallelStrategy, "model parallelism"),
        (strategies.XLAStrategy, "TPUs"),
        (strategies.SingleDeviceXLAStrategy, "TPUs"),
        (plugins.BitsandbytesPrecision, "bitsandbytes"),
        (plugins.DeepSpeedPrecision, "DeepSpeed"),
        (plugins.FSDPPrecision, "fully sharded"),
        (plugins.TransformerEnginePrecision, "Transformer Engine"),
        (plugins.XLAPrecision, "TPUs"),
    ],
)
def test_unsupported_features_import_and_refuse_construction(cls: type, feature: str) -> None:
    with pytest.raises(NotImplementedError, match=f"{feature}.*not supported by lightning_lib"):
        cls()


def test_the_trainer_s_strategy_is_lightning_s_type() -> None:
    trainer = pl.Trainer(logger=False)
    assert isinstance(trainer.strategy, strategies.SingleDeviceStrategy)
    assert isinstance(trainer.strategy, strategies.Strategy)
    assert issubclass(strategies.DDPStrategy, strategies.ParallelStrategy)


@pytest.mark.parametrize("model_cls", [BoringModel, ManualOptimBoringModel])
def test_every_backward_goes_through_the_strategy(tmp_path: Path, model_cls: type) -> None:
    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, max_steps=3, limit_val_batches=0))
    with mock.patch.object(strategies.Strategy, "backward", wraps=trainer.strategy.backward) as backward:
        trainer.fit(model_cls())
    assert backward.call_count == 3


def test_connect_attaches_a_model_without_running(tmp_path: Path) -> None:
    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=2))
    model = BoringModel()
    trainer.strategy.connect(model)
    assert trainer.lightning_module is model and trainer.strategy.lightning_module is model
    assert trainer.estimated_stepping_batches == 2 * 64
    batch: Any = trainer.strategy.batch_to_device(torch.ones(2), torch.device("cpu"))
    assert batch.device.type == "cpu"


@pytest.mark.parametrize(
    ("plugin", "name"),
    [
        (plugins.DoublePrecision(), "64-true"),
        (plugins.HalfPrecision("bf16-true"), "bf16-true"),
        (plugins.MixedPrecision("bf16-mixed", "cpu"), "bf16-mixed"),
        (plugins.Precision(), "32-true"),
    ],
)
def test_a_precision_plugin_sets_the_trainer_s_precision(tmp_path: Path, plugin: Any, name: str) -> None:
    trainer = pl.Trainer(plugins=[plugin], **quiet_trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0))
    assert trainer.precision == name and trainer.precision_plugin is plugin and plugin.precision == name
    trainer.fit(BoringModel())
    assert trainer.global_step == 1


def test_precision_and_a_precision_plugin_together_are_refused() -> None:
    with pytest.raises(ValueError, match="Received both `precision=64-true` and `plugins="):
        pl.Trainer(precision="64-true", plugins=plugins.DoublePrecision())
    with pytest.raises(ValueError, match="Expected one precision plugin"):
        pl.Trainer(plugins=[plugins.DoublePrecision(), plugins.Precision()])
    with pytest.raises(ValueError, match="'16-true' or 'bf16-true', received '32-true'"):
        plugins.HalfPrecision("32-true")


def test_sync_batchnorm_converts_the_module_s_batch_norms_under_ddp() -> None:
    from types import SimpleNamespace

    strategy = strategies.DDPStrategy()
    # a validate run: the module is prepared but not wrapped, so no process group is needed here
    strategy.trainer = SimpleNamespace(  # type: ignore[assignment]
        sync_batchnorm=True, precision_plugin=plugins.Precision(), state=SimpleNamespace(fn="validate")
    )
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    strategy.setup_module(module)
    assert isinstance(module[1], torch.nn.SyncBatchNorm)
    assert pl.Trainer(sync_batchnorm=True, logger=False).sync_batchnorm
