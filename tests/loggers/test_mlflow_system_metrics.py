"""MLFlowLogger's system metrics: sampled on a thread during fit only, into the run's ``system/*`` metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

import lightning_lib as pl
from lightning_lib.loggers import MLFlowLogger
from tests.helpers import BoringModel

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("psutil")


def _fit(tmp_path: Path, logger: MLFlowLogger) -> None:
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        default_root_dir=str(tmp_path), logger=logger,
    )  # fmt: skip
    trainer.fit(BoringModel())


def _system_metrics(logger: MLFlowLogger) -> dict[str, float]:
    metrics = mlflow.MlflowClient(logger.tracking_uri).get_run(str(logger.run_id)).data.metrics
    return {k: v for k, v in metrics.items() if k.startswith("system/")}


def test_a_fit_shorter_than_the_interval_still_fills_the_system_metrics_tab(tmp_path: Path) -> None:
    logger = MLFlowLogger(
        save_dir=str(tmp_path / "mlruns"), log_system_metrics=True, system_metrics_interval=60
    )
    _fit(tmp_path, logger)
    system = _system_metrics(logger)
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
    assert logger._system_metrics is None  # the sampling thread is stopped with the run
    assert mlflow.MlflowClient(logger.tracking_uri).get_run(str(logger.run_id)).info.status == "FINISHED"


def test_system_metrics_are_off_by_default_as_in_lightning(tmp_path: Path) -> None:
    logger = MLFlowLogger(save_dir=str(tmp_path / "mlruns"))
    _fit(tmp_path, logger)
    assert _system_metrics(logger) == {}


def test_system_metrics_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"Expected system_metrics_interval > 0, received 0"):
        MLFlowLogger(log_system_metrics=True, system_metrics_interval=0)
