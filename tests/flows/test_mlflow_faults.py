"""Issue 14, points 7 and 8, against a real ``mlflow server`` (and the S3 endpoint):

- a failure before training (object storage lost while choosing ``ckpt_path="last"``, after the run was
  started to record the config) ends the MLflow run FAILED, never leaves it RUNNING; a missing bucket is
  refused before any run exists (the run key's lease is taken in the checkpoint folder first);
- an MLflow outage at the end of a fit (through :class:`tests.faults.FaultProxy`) does not fail the flow:
  training succeeds, and the register task delivers what the outage kept from MLflow (the metrics, the
  model logged from the checkpoint, the run's final status) once the server is back.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from lightning_lib.loggers.mlflow import TAG_RUN_KEY
from lightning_lib.storage import BucketNotFound
from tasks.data import prepare
from tasks.training import fit_model
from tests.flows.conftest import digits_config
from tests.services import MlflowServer

pytestmark = [pytest.mark.services]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow_faults"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _runs_with_key(uri: str, experiment: str, run_key: str) -> list[Any]:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(client.search_runs([found.experiment_id], filter_string=f"tags.{TAG_RUN_KEY} = '{run_key}'"))


def test_a_missing_bucket_is_refused_before_any_mlflow_run_exists(
    server: MlflowServer, s3_endpoint: str, tmp_path: Path
) -> None:
    # the run key's lease is taken in the checkpoint folder before anything else: a missing bucket fails
    # there, so no MLflow run is started that could be left RUNNING
    missing = f"s3://missing-{uuid.uuid4().hex[:12]}"
    config = digits_config(
        tmp_path,
        checkpoint_root=f"{missing}/checkpoints",
        **{"data.data_root": str(tmp_path / "data"), "mlflow.tracking_uri": server.uri},
    )
    prepared = prepare(config)
    run_key = f"no-bucket-{uuid.uuid4().hex[:8]}"
    with pytest.raises(BucketNotFound):
        fit_model(config, prepared, run_key, progress_artifact=False)
    experiment = MlflowClient(server.uri).get_experiment_by_name(config.mlflow.experiment_name)
    if experiment is not None:
        assert _runs_with_key(server.uri, config.mlflow.experiment_name, run_key) == []


def test_storage_lost_after_the_run_started_ends_the_run_failed(
    server: MlflowServer, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 endpoint goes away once the run key is held (and the MLflow run has the config): choosing
    ``ckpt_path="last"`` fails, and the run ends FAILED with the exception tagged, never RUNNING."""
    import contextlib

    import tasks.training
    from tests.faults import FaultProxy

    port = int(os.environ["AWS_ENDPOINT_URL"].rpartition(":")[2])
    with FaultProxy(port) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the outage outlasts boto3's retries at once
        hold = tasks.training.hold_run_key

        @contextlib.contextmanager
        def hold_then_lose_storage(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with hold(*args, **kwargs) as guards:
                proxy.set("reset")
                yield guards

        monkeypatch.setattr(tasks.training, "hold_run_key", hold_then_lose_storage)
        config = digits_config(
            tmp_path,
            checkpoint_root=f"{s3_endpoint}/lost-{uuid.uuid4().hex[:8]}",
            **{"data.data_root": str(tmp_path / "data"), "mlflow.tracking_uri": server.uri},
        )
        prepared = prepare(config)
        run_key = f"lost-storage-{uuid.uuid4().hex[:8]}"
        with pytest.raises(Exception) as failure:
            fit_model(config, prepared, run_key, progress_artifact=False)
    [run] = _runs_with_key(server.uri, config.mlflow.experiment_name, run_key)
    assert run.info.status == "FAILED"
    assert type(failure.value).__name__ in run.data.tags["lightning_lib.exception"]


def test_a_checkpoint_that_cannot_be_chosen_ends_the_trainer_s_run_failed(
    server: MlflowServer, tmp_path: Path
) -> None:
    """The library's side: ``Trainer.fit`` fails through its interrupt path (loggers finalised "failed")
    when choosing the checkpoint fails, as Lightning does, even with a run already started."""
    import lightning_lib as pl
    from lightning_lib.loggers import MLFlowLogger
    from tests.helpers import ClassifierDataModule, ClassifierModel

    run_key = f"bad-ckpt-{uuid.uuid4().hex[:8]}"
    logger = MLFlowLogger(experiment_name="faults", tracking_uri=server.uri, run_key=run_key)
    logger.log_hyperparams({"lr": 0.1})  # the run exists from here on, RUNNING
    trainer = pl.Trainer(
        max_epochs=1, logger=logger, enable_progress_bar=False, default_root_dir=str(tmp_path)
    )
    with pytest.raises(Exception, match="missing"):
        trainer.fit(ClassifierModel(), ClassifierDataModule(), ckpt_path=str(tmp_path / "missing.ckpt"))
    [run] = _runs_with_key(server.uri, "faults", run_key)
    assert run.info.status == "FAILED"


@pytest.mark.usefixtures("prefect_harness")
def test_an_mlflow_outage_at_the_end_of_a_fit_does_not_fail_the_flow(
    server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_lib.loggers
    from flows.training import training
    from tests.faults import FaultProxy
    from tests.flows.mlflow_outage import OUTAGE, ShortWaitLogger

    monkeypatch.setenv("LIGHTNING_LIB_ALLOWED_IMPORTS", "tests.flows.")
    # the fit's logger waits 3 s instead of 30 for the server, then ends the outage (see mlflow_outage)
    monkeypatch.setattr(lightning_lib.loggers, "MLFlowLogger", ShortWaitLogger)
    name = f"outage-{uuid.uuid4().hex[:8]}"
    with FaultProxy(server.port) as proxy:
        OUTAGE.proxy, OUTAGE.reports = proxy, []
        config = digits_config(
            tmp_path,
            model="tests.flows.mlflow_outage:OutageClassifier",
            **{
                "mlflow.tracking_uri": proxy.url,
                "mlflow.experiment_name": name,
                "mlflow.registered_model_name": name,
            },
        )
        try:
            result = training(config)
        finally:
            OUTAGE.proxy = None
    # the outage did cost the fit its metrics (the last values of its validation), its model and its
    # final status ...
    [report] = OUTAGE.reports
    assert not report.ok and proxy.faulted > 0
    assert {"val_loss", "val_acc"} <= set(report.lost_metrics) and report.lost_records
    # ... and the flow delivered all of it once the server was back
    fitted = result.fit
    assert fitted.global_step == 8 and fitted.pending is None and fitted.model_uri is not None
    assert result.model_version is not None and result.champion
    client = MlflowClient(server.uri)
    run = client.get_run(fitted.mlflow_run_id)
    assert run.info.status == "FINISHED"
    for key, value, timestamp, step in report.lost_records:
        history = {(m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key)}
        assert (step, timestamp, value) in history, key
    assert run.data.tags["checkpoint.best.uri"] == fitted.best_checkpoint_uri  # the lost tags too
    version = client.get_model_version(name, result.model_version.version)
    assert (
        version.run_id == fitted.mlflow_run_id
        and version.tags["checkpoint_uri"] == fitted.best_checkpoint_uri
    )
