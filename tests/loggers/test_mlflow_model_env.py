"""Logging a model must leave ``MLFLOW_TRACKING_URI`` as it found it: later code (the next task of a flow)
reads it to find the server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_lib.loggers.mlflow._model import log_pytorch_model


def test_logging_a_model_keeps_the_tracking_uri_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("env", artifact_location=str(tmp_path / "artifacts")))
    log_pytorch_model(uri, run.info.run_id, torch.nn.Linear(2, 1), torch.zeros(1, 2))
    import os

    assert os.environ.get("MLFLOW_TRACKING_URI") == uri
