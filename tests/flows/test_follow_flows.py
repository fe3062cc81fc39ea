"""A training flow run a person can follow: its names, MLflow source and system metrics, its log lines."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from mlflow import MlflowClient

from flows.training import training
from tasks.config import TrainConfig
from tasks.tracking import tracking_uri

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _flow_run_and_logs(flow_run_id: str) -> tuple[Any, list[str], list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # the run's logs reach the API in batches
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return run, [entry.message for entry in logs], artifacts


def test_a_training_run_is_named_sourced_logged_and_measured(make_config: Callable[..., TrainConfig]) -> None:
    config = make_config()
    result = training(config)
    run, logs, artifacts = _flow_run_and_logs(str(result.flow_run_id))
    # the flow run and the MLflow run share one readable name; the run key stays the tag that finds it
    assert re.fullmatch(r"DigitsClassifier-digits\.csv-\d{4}-\d\d-\d\d-\d{4}", run.name)
    mlflow_run = MlflowClient(tracking_uri(config)).get_run(result.mlflow_run_id)
    tags = mlflow_run.data.tags
    assert mlflow_run.info.run_name == run.name and tags["run_key"] == result.run_key
    assert tags["mlflow.source.name"] == "flows/training.py" and tags["mlflow.source.type"] == "LOCAL"
    assert any(name.startswith("system/cpu_utilization") for name in mlflow_run.data.metrics)
    # the log says where the MLflow run is, what was registered and what became champion
    version = result.model_version
    assert version is not None
    assert any(f"MLflow run {result.mlflow_run_id}" in line and "/#/experiments/" in line for line in logs)
    assert f"Registered digits-test version {version.version} from MLflow run {version.run_id}." in logs
    assert any(
        line.startswith(f"Promoted digits-test version {version.version} to champion") for line in logs
    )
    # the Artifacts tab's card shows the description: it carries the percentage
    progress = next(a for a in artifacts if a.type == "progress")
    assert progress.data == 100.0 and progress.description.endswith(": 100%")
    # a second version is registered but the champion is kept, and the log says so
    again = training(make_config(seed=1))
    _, logs, _ = _flow_run_and_logs(str(again.flow_run_id))
    assert any(line.startswith(f"Kept digits-test version {version.version} as champion") for line in logs)
