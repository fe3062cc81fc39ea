"""The training flow under Prefect's test harness: results, checkpoints, MLflow, registry, artifacts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from prefect.exceptions import ParameterTypeError

from flows.training import TrainingResult, training
from lightning_lib.checkpoint import latest_valid, load_file
from lightning_lib.storage import open_store
from tasks.config import TrainConfig
from tasks.registry import CHAMPION, get_alias
from tasks.tabular import DataValidationError
from tasks.tracking import tracking_uri
from tasks.training import TAG_INPUT_SHA256

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _artifacts(flow_run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def test_training_flow_trains_tracks_registers_and_reports(make_config: Callable[..., TrainConfig]) -> None:
    config = make_config()
    result = training(config)
    assert isinstance(result, TrainingResult)
    fitted = result.fit
    assert fitted.global_step == 8 and fitted.steps_this_attempt == 8 and fitted.resumed_from is None
    assert result.run_key.startswith("training-") and result.flow_run_id in result.run_key
    # checkpoints: committed under <root>/<run_key>, the best one verifies
    assert fitted.checkpoint_dir == os.path.join(config.checkpoint_root, result.run_key)
    assert latest_valid(open_store(fitted.checkpoint_dir)) is not None
    assert fitted.best_checkpoint_uri in fitted.checkpoint_uris and Path(fitted.best_checkpoint_uri).exists()
    # MLflow: one run, the config as params, the data digest, fit and test metrics, a logged model
    client = MlflowClient(tracking_uri(config))
    run = client.get_run(fitted.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert TrainConfig.from_flat_params(run.data.params).model_dump() == config.model_dump()
    assert run.data.tags[TAG_INPUT_SHA256] == result.prepared.input_sha256
    assert run.data.metrics["test_acc"] == pytest.approx(result.test_metrics["test_acc"])
    assert {"val_loss", "val_acc", "test_loss"} <= set(run.data.metrics)
    # validate and test logged into the fit's run (one run for the key), at the best checkpoint's step,
    # without ending it again: its end is the fit's
    step = int(load_file(fitted.best_checkpoint_uri)["global_step"])
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_acc")] == [
        (step, pytest.approx(result.test_metrics["test_acc"]))
    ]
    val_points = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert (step, pytest.approx(result.validation_metrics["val_acc"])) in val_points
    keyed = client.search_runs([run.info.experiment_id], f"tags.run_key = '{result.run_key}'")
    assert [r.info.run_id for r in keyed] == [run.info.run_id]
    assert run.info.end_time is not None and run.info.end_time <= max(
        m.timestamp for m in client.get_metric_history(run.info.run_id, "test_acc")
    )
    assert fitted.model_uri is not None
    # registry: the first version is the champion, tagged with its checkpoint and test metrics
    version = result.model_version
    assert version is not None and result.champion
    champion = get_alias(tracking_uri(config), "digits-test", CHAMPION)
    assert champion == version and champion.checkpoint_uri == fitted.best_checkpoint_uri
    assert champion.metrics["test_acc"] == result.test_metrics["test_acc"]
    # Prefect artifacts: the progress bar reached 100 %, the summary names the checkpoints and the run
    artifacts = {a.type: a for a in _artifacts(str(result.flow_run_id))}
    assert artifacts["progress"].data == 100.0
    summary = artifacts["markdown"].data
    assert fitted.best_checkpoint_uri in summary and fitted.mlflow_run_id in summary and "test_acc" in summary


def test_rerun_with_the_same_run_key_resumes_instead_of_starting_over(
    make_config: Callable[..., TrainConfig],
) -> None:
    first = training(make_config(run_key="nightly-1"), register_model=False)
    again = training(make_config(run_key="nightly-1"), register_model=False)
    assert again.fit.steps_this_attempt == 0 and again.fit.resumed_from is not None
    assert again.fit.mlflow_run_id == first.fit.mlflow_run_id
    assert again.test_metrics == first.test_metrics
    config = make_config(run_key="nightly-1")
    runs = MlflowClient(tracking_uri(config)).search_runs(
        [first.fit.mlflow_experiment_id], filter_string="tags.run_key = 'nightly-1'"
    )
    assert len(runs) == 1


def test_unchanged_data_reuses_the_prepared_splits(make_config: Callable[..., TrainConfig]) -> None:
    one = training(make_config(), register_model=False)
    manifest = Path(one.prepared.manifest_uri)
    written = manifest.stat().st_mtime_ns
    two = training(make_config(), register_model=False)
    assert one.prepared == two.prepared
    assert manifest.stat().st_mtime_ns == written  # served from the task cache: nothing was rewritten


def test_disallowed_import_path_is_refused_before_any_work(tmp_path: Path) -> None:
    raw = {
        "model": "os.path:join",
        "data": {"source": str(tmp_path / "x.csv"), "target": "y"},
        "checkpoint_root": str(tmp_path / "checkpoints"),
    }
    # what the API hands over is plain JSON; Prefect validates it into TrainConfig before the flow body
    with pytest.raises(ParameterTypeError, match="outside the allowed module prefixes"):
        training(raw)  # type: ignore[arg-type]
    assert not (tmp_path / "checkpoints").exists()


def test_bad_csv_column_is_named_and_nothing_is_trained(
    tmp_path: Path, make_config: Callable[..., TrainConfig]
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("a,b,target\n1,x,0\n2,3,1\n")
    config = make_config(**{"data.source": str(source)})
    with pytest.raises(DataValidationError, match="'b'"):
        training(config)
    assert not Path(config.checkpoint_root).exists()
