"""Every flow with a project's own data module (no table): train, reproduce, retrain, predict (issue 11)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch

from flows.predict import predict_flow
from flows.reproduce import ReproductionRefused, reproduce
from flows.retraining import retraining
from flows.training import training
from lightning_lib.checkpoint import load_file
from tasks.config import TrainConfig
from tasks.imports import ALLOWED_IMPORTS_ENV
from tasks.prediction import DATA_ROOTS_ENV, OUTPUT_MARKER
from tasks.tracking import tracking_uri
from tests.tasks import project_datamodule

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def _allow_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_IMPORTS_ENV, "tests.tasks.")


def config_for(root: Path, data: Path, **kwargs: Any) -> TrainConfig:
    (root / "mlflow").mkdir(parents=True, exist_ok=True)
    return TrainConfig.model_validate(
        {
            "model": "tests.tasks.project_datamodule:Regressor",
            "datamodule": "tests.tasks.project_datamodule:FolderDataModule",
            "datamodule_kwargs": {"root": str(data), **kwargs},
            "trainer": {"max_epochs": 2, "enable_progress_bar": False, "accelerator": "cpu"},
            "checkpoint_root": str(root / "checkpoints"),
            "checkpoint": {"monitor": "val_loss", "mode": "min"},
            "mlflow": {
                "tracking_uri": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
                "experiment_name": "project-flows",
                "registered_model_name": "project-regressor",
            },
        }
    )


def test_a_project_data_module_trains_reproduces_and_refuses_changed_data(
    git_project: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    config = config_for(tmp_path, tmp_path / "data")
    result = training(config)
    assert result.prepared.kind == "datamodule" and result.prepared.fingerprint is not None
    digest = result.prepared.fingerprint.digest
    run = MlflowClient(tracking_uri(config)).get_run(result.mlflow_run_id)
    assert run.data.tags["data.fingerprint"] == digest
    assert run.data.params["config.data"] == "null"  # the config has no table; reproduce reads it back
    inputs = run.inputs.dataset_inputs
    assert ("FolderDataModule", digest[:36]) in [(i.dataset.name, i.dataset.digest) for i in inputs]
    artifacts = [
        a.path for a in MlflowClient(tracking_uri(config)).list_artifacts(result.mlflow_run_id, "data")
    ]
    assert artifacts == ["data/data_sources.jsonl.gz"]
    checkpoint = load_file(result.checkpoint_uri)
    assert checkpoint["data_identity"]["digest"] == digest
    assert checkpoint["data_identity"]["sources"] == [str(tmp_path / "data")]

    outcome = reproduce(result.mlflow_run_id, tracking_uri=tracking_uri(config))
    assert outcome.match, outcome.differences

    changed = tmp_path / "data" / "val.pt"
    torch.save({"x": torch.zeros(3, 4), "y": torch.zeros(3, 1)}, changed)
    with pytest.raises(ReproductionRefused) as refused:
        reproduce(result.mlflow_run_id, tracking_uri=tracking_uri(config))
    message = str(refused.value)
    assert f"{changed} changed" in message and "--allow-data-change" in message


def test_predict_streams_the_data_module_s_predictions_to_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path))
    config = config_for(tmp_path, tmp_path / "data", batch_size=5)
    trained = training(config)
    output = tmp_path / "out" / "predictions.parquet"
    result = predict_flow(
        model_name="project-regressor", output_uri=str(output), tracking_uri=tracking_uri(config)
    )
    assert result.model == f"project-regressor version {trained.model_version.version} (champion)"  # type: ignore[union-attr]
    table = pq.read_table(output)
    assert result.rows == table.num_rows == 64
    assert OUTPUT_MARKER in (table.schema.metadata or {})
    model = project_datamodule.Regressor.load_from_checkpoint(trained.checkpoint_uri).eval()
    x = torch.load(os.path.join(tmp_path, "data", "test.pt"), weights_only=True)["x"]
    with torch.no_grad():
        expected = model(x)[:, 0].numpy()
    assert table.column("prediction").to_numpy().tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="Expected no source for a model trained on its own data module"):
        predict_flow("x.csv", "project-regressor", tracking_uri=tracking_uri(config))


def test_retraining_windows_select_the_data_module_s_partition(tmp_path: Path) -> None:
    data = tmp_path / "events"
    config = config_for(tmp_path, data / "dt={window_start}")
    first = retraining(config, window_end=dt.date(2026, 12, 2))
    assert first.decision.promote and (data / "dt=2026-12-01" / "train.pt").exists()
    second = retraining(config, window_end=dt.date(2026, 12, 3), metric="test_loss", mode="min")
    assert (data / "dt=2026-12-02" / "train.pt").exists()
    assert second.fit.run_key != first.fit.run_key
    # the champion was tested on the challenger's window, with its own checkpoint
    assert second.champion_metrics is not None and "test_loss" in second.champion_metrics


def test_bad_shards_fail_before_training_and_touch_nothing(tmp_path: Path) -> None:
    """A schema change between shards (and an unreadable shard) is named by the data module's checks, which
    the pipeline runs before the run key is taken: no checkpoint folder, no MLflow run."""
    import pyarrow as pa

    data = tmp_path / "events"
    (data / "dt=2026-12-01").mkdir(parents=True)
    (data / "dt=2026-12-02").mkdir(parents=True)
    pq.write_table(pa.table({"f0": [1.0, 2.0], "label": [0, 1]}), data / "dt=2026-12-01" / "part-0.parquet")
    pq.write_table(pa.table({"f0": ["a", "b"], "label": [0, 1]}), data / "dt=2026-12-02" / "part-0.parquet")
    (tmp_path / "mlflow").mkdir()
    config = TrainConfig.model_validate(
        {
            "model": "tests.tasks.project_datamodule:Regressor",
            "datamodule": "datamodules.parquet:ShardedParquetDataModule",
            "datamodule_kwargs": {"train": str(data), "features": ["f0"], "target": "label"},
            "checkpoint_root": str(tmp_path / "checkpoints"),
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"},
        }
    )
    with pytest.raises(Exception, match=r"part-0\.parquet") as failed:
        training(config, register_model=False)
    assert "f0" in str(failed.value)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())

    (data / "dt=2026-12-02" / "part-0.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(Exception, match=r"dt=2026-12-02.part-0\.parquet"):
        training(config, register_model=False)


@pytest.mark.parametrize("flow", ["training", "retraining"])
def test_a_model_without_test_step_is_refused_before_any_work(tmp_path: Path, flow: str) -> None:
    (tmp_path / "mlflow").mkdir()
    config = TrainConfig.model_validate(
        {
            "model": "tests.tasks.project_datamodule:RegressorWithoutTestStep",
            "datamodule": "tests.tasks.project_datamodule:FolderDataModule",
            "checkpoint_root": str(tmp_path / "checkpoints"),
            "mlflow": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
                "registered_model_name": "no-test-step",
            },
        }
    )
    with pytest.raises(ValueError, match=r"RegressorWithoutTestStep to implement test_step: the \w+ flow"):
        (training if flow == "training" else retraining)(config)
    assert not (tmp_path / "checkpoints").exists()
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()
