"""End to end against real servers on 127.0.0.1: ``prefect server start``, ``mlflow server`` and the S3
endpoint, with the flows served by ``lightning-lib serve`` in its own process, as in production.

Shown here: deployments created by serving; a run triggered with ``run_deployment`` (what the UI does);
the serving process SIGKILLed mid-fit and started again, and nobody else acting: the crash-recovery
automations that serving set up mark the silent flow run Crashed and schedule it again; it resumes from
the last committed checkpoint in S3, trains fewer steps, continues the same MLflow run (ended KILLED in
between) and ends with the same metrics as an uninterrupted run; bad configs submitted through the API
fail validation and do no work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.training import TrainingResult
from tasks.config import TrainConfig
from tasks.run_key import config_digest
from tests.flows.conftest import DIGITS_CSV, REPO, make_git_project
from tests.prefect_server import PrefectServer, kill_group, spawn
from tests.services import MlflowServer
from tests.support import wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Stack:
    def __init__(self, root: Path, prefect: PrefectServer, mlflow: MlflowServer, bucket: str) -> None:
        self.root = root
        self.prefect = prefect
        self.mlflow = mlflow
        self.bucket = bucket
        self.serve_process: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            **prefect.env(),
            "PREFECT_LOCAL_STORAGE_PATH": str(root / "results"),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            # Prefect's shortest heartbeat, and a flow run silent for 50 s is Crashed (90 s by default)
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            "LIGHTNING_LIB_CRASH_AFTER_S": "50",
            # and re-run 15 s after it is Crashed (60 s by default, for a worker's second crash report:
            # here nobody is left to send one)
            "LIGHTNING_LIB_RERUN_AFTER_S": "15",
            "LIGHTNING_LIB_ALLOWED_IMPORTS": "tests.flows.",
            "PYTHONPATH": str(REPO),
        }

    def serve(self) -> None:
        command = [sys.executable, "-m", "flows.cli", "serve"]
        self.serve_process = spawn(command, self.root / "serve.log", self.env, self.root)

    def kill_serve(self) -> None:
        if self.serve_process is not None:
            kill_group(self.serve_process)
            self.serve_process = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Stack]:
    """The servers and a serving process, shared by the tests of this module (starting them takes ~30 s).

    The serving process runs in a clean git work tree: the code version its runs are tagged with, which
    ``reproduce`` checks.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    root = tmp_path_factory.mktemp("e2e")
    make_git_project(root)
    prefect = PrefectServer(root / "prefect")
    mlflow = MlflowServer(root / "mlflow")
    stack = Stack(root, prefect, mlflow, s3_endpoint)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LIGHTNING_LIB_ALLOWED_IMPORTS", "tests.flows.")  # the slow test model
        env.setenv("MLFLOW_TRACKING_URI", mlflow.uri)
        try:
            prefect.start()
            mlflow.start()
            stack.env["MLFLOW_TRACKING_URI"] = mlflow.uri
            with temporary_settings(
                updates={PREFECT_API_URL: prefect.api_url, PREFECT_LOCAL_STORAGE_PATH: str(root / "results")}
            ):
                stack.serve()
                wait_for(lambda: _deployment_exists("training/training"), 120, "the served deployments")
                yield stack
        finally:
            stack.kill_serve()
            mlflow.stop()
            prefect.stop()


def _deployment_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
            return True
        except ObjectNotFound:
            return False


def _flow_run(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _wait_terminal(flow_run_id: Any, timeout: float = 300) -> Any:
    return wait_for(
        lambda: (run := _flow_run(flow_run_id)).state and run.state.type.value in TERMINAL and run,
        timeout,
        f"flow run {flow_run_id} to finish",
    )


def _e2e_config(bucket: str, **changes: Any) -> TrainConfig:
    data: dict[str, Any] = {
        "model": "tests.flows.slow_model:SlowDigitsClassifier",
        "model_kwargs": {"hidden": 32, "t_max": 2, "step_sleep": 0.15},
        "datamodule_kwargs": {"batch_size": 64, "min_std": 1.0},
        "data": {"source": str(DIGITS_CSV), "target": "target"},
        "trainer": {"max_epochs": 2, "limit_train_batches": 15, "limit_val_batches": 2,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "accelerator": "cpu"},
        "checkpoint": {"every_n_train_steps": 3},
        "checkpoint_root": f"{bucket}/e2e/checkpoints",
        "mlflow": {"experiment_name": "e2e", "registered_model_name": "digits-e2e"},
        **changes,
    }  # fmt: skip
    return TrainConfig.model_validate(data)


def _committed_step(checkpoint_dir: str) -> int:
    from lightning_lib.checkpoint._commit import list_committed
    from lightning_lib.storage import open_store

    try:
        return max((c.step for c in list_committed(open_store(checkpoint_dir))), default=-1)
    except Exception:
        return -1


def test_served_training_survives_a_killed_server_recovered_by_the_automations(stack: Stack) -> None:
    import mlflow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    from flows.recovery import CRASHED_AUTOMATION, RERUN_AUTOMATION
    from tasks.runs import TAG_CRASHED_ATTEMPTS

    with get_client(sync_client=True) as prefect_client:  # set up by serving, once each
        assert len(prefect_client.read_automations_by_name(CRASHED_AUTOMATION)) == 1
        assert len(prefect_client.read_automations_by_name(RERUN_AUTOMATION)) == 1
    config = _e2e_config(stack.bucket)
    params = {"config": config.model_dump(mode="json")}
    flow_run = run_deployment("training/training", parameters=params, timeout=0)
    run_key = f"training-{flow_run.id}-{config_digest(config)}"
    checkpoint_dir = f"{config.checkpoint_root}/{run_key}"

    # SIGKILL the serving process (and the flow run process it started) once a mid-fit commit is in S3
    wait_for(lambda: _committed_step(checkpoint_dir) >= 6, 240, "a committed checkpoint at step >= 6")
    stack.kill_serve()
    killed_at = _committed_step(checkpoint_dir)
    assert 6 <= killed_at < 30
    assert _flow_run(flow_run.id).state.type.value == "RUNNING"  # nobody left to say otherwise
    stack.serve()  # a serving process comes back (a restarted service), nobody touches the flow run

    # the heartbeats stopped: one automation marks it Crashed (50 s after the last beat, which came at most
    # 30 s before the kill), the other schedules it again at once, and the new serving process runs it
    final = wait_for(
        lambda: (run := _flow_run(flow_run.id)).state.type.value in TERMINAL - {"CRASHED"} and run,
        400,
        f"flow run {flow_run.id} to be recovered",
    )
    with get_client(sync_client=True) as prefect_client:
        history = [(s.type.value, s.message or "") for s in prefect_client.read_flow_run_states(flow_run.id)]
    crashed = [message for kind, message in history if kind == "CRASHED"]
    assert crashed == ["No heartbeat for 50 s: the flow run's process is gone."], history
    assert final.state.type.value == "COMPLETED", final.state.message
    result = final.state.result()
    assert isinstance(result, TrainingResult)  # the served run imported flows.training, as the client does
    fitted = result.fit
    assert fitted.run_key == run_key and fitted.global_step == 30
    assert fitted.resumed_from is not None and 0 < fitted.steps_this_attempt <= 30 - killed_at
    assert final.run_count == 2  # rerun once, by the second automation: the same flow run id, the same key

    # the same MLflow run continued: one run for the key, FINISHED, the config in its params
    client = mlflow.MlflowClient(stack.mlflow.uri)
    runs = client.search_runs([fitted.mlflow_experiment_id], filter_string=f"tags.run_key = '{run_key}'")
    assert [r.info.run_id for r in runs] == [fitted.mlflow_run_id]
    assert (
        runs[0].info.status == "FINISHED"
        and runs[0].data.params["config.checkpoint_root"] == config.checkpoint_root
    )
    assert runs[0].data.tags[TAG_CRASHED_ATTEMPTS] == "1"  # ended KILLED by the rerun, then reopened
    history = client.get_metric_history(fitted.mlflow_run_id, "val_loss")
    # both epochs' validation (before and after the kill), plus the validate task's, at its checkpoint's step
    assert {14, 29} <= {m.step for m in history}
    assert result.model_version is not None and result.model_version.checkpoint_uri.startswith(checkpoint_dir)

    # Prefect artifacts of the run: the progress bar and the summary naming checkpoints and MLflow run
    with get_client(sync_client=True) as prefect_client:
        artifacts = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    kinds = {a.type for a in artifacts}
    assert {"progress", "markdown"} <= kinds
    summary = next(a.data for a in artifacts if a.type == "markdown")
    assert fitted.best_checkpoint_uri in summary and fitted.mlflow_run_id in summary

    # an uninterrupted run of the same config ends with the same metrics, bit for bit
    reference_params = {
        "config": config.model_copy(update={"run_key": "e2e-reference"}).model_dump(mode="json")
    }
    reference = run_deployment("training/training", parameters=reference_params, timeout=300)
    assert reference.state.type.value == "COMPLETED", reference.state.message
    expected = reference.state.result()
    assert expected.fit.steps_this_attempt == 30
    assert result.test_metrics == expected.test_metrics
    assert result.fit.metrics == expected.fit.metrics


def test_bad_configs_through_the_api_fail_validation_and_do_no_work(stack: Stack) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    good = _e2e_config(stack.bucket).model_dump(mode="json")
    # a wrong type is refused by the API itself, against the deployment's parameter schema
    wrong_type = {**good, "trainer": {**good["trainer"], "max_epochs": "many"}}
    with pytest.raises(Exception, match=r"max_epochs|[Vv]alidation"):
        run_deployment("training/training", parameters={"config": wrong_type}, timeout=0)
    # an import path outside the allowed prefixes is refused by the API as well: the schema's pattern
    # carries the serving process's prefixes (issue 13)
    outside = {**good, "model": "os.path:join", "run_key": "refused-run"}
    with pytest.raises(Exception, match=r"model|[Vv]alidation"):
        run_deployment("training/training", parameters={"config": outside}, timeout=0)
    # a rule across fields passes the schema but fails before any task runs
    crossed = {
        **good,
        "data": {**good["data"], "val_fraction": 0.5, "test_fraction": 0.5},
        "run_key": "refused-run",
    }
    flow_run = run_deployment("training/training", parameters={"config": crossed}, timeout=0)
    final = _wait_terminal(flow_run.id, timeout=180)
    assert final.state.type.value == "FAILED"
    assert "Expected val_fraction + test_fraction < 1" in (final.state.message or "")
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    assert tasks == []
    assert _committed_step(f"{good['checkpoint_root']}/refused-run") == -1


def _run(name: str, parameters: dict[str, Any], timeout: float = 300) -> Any:
    """Trigger a deployment as the UI does and wait for its result."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name, parameters=parameters, timeout=timeout)
    assert flow_run.state.type.value == "COMPLETED", flow_run.state.message
    return flow_run.state.result()


def test_retraining_and_reproduce_through_the_served_deployments(stack: Stack) -> None:
    import mlflow

    def config(**trainer: Any) -> dict[str, Any]:
        base = _e2e_config(
            stack.bucket,
            model_kwargs={"hidden": 32, "t_max": 2, "step_sleep": 0.0},
            mlflow={"experiment_name": "e2e-retraining", "registered_model_name": "digits-e2e-retrain"},
        ).model_dump(mode="json")
        base["trainer"].update(trainer)
        return base

    weak = {"max_epochs": 1, "limit_train_batches": 1}
    first = _run("training/training", {"config": config(**weak)})
    assert first.champion
    promoted = _run("retraining/retraining", {"config": config(max_epochs=2, limit_train_batches=12)})
    assert promoted.decision.promote and promoted.champion_after == promoted.challenger
    kept = _run("retraining/retraining", {"config": config(**weak)})
    assert not kept.decision.promote and kept.champion_after == promoted.challenger
    client = mlflow.MlflowClient(stack.mlflow.uri)
    champion = client.get_model_version_by_alias("digits-e2e-retrain", "champion")
    assert champion.version == promoted.challenger.version

    # reproduce the first training run from MLflow alone: same code, same data, identical metrics
    outcome = _run("reproduce/reproduce", {"run_id": first.mlflow_run_id})
    assert outcome.match and "exactly" in outcome.message, outcome.message
    assert outcome.reproduced_metrics["test_acc"] == first.test_metrics["test_acc"]


def _images_config(bucket: str, **trainer: Any) -> dict[str, Any]:
    """The bundled image example: PNG files under an S3 prefix, generated by its prepare_data."""
    return TrainConfig.model_validate(
        {
            "model": "examples.images:DigitsCNN",
            "model_kwargs": {"channels": 8, "hidden": 32},
            "datamodule": "examples.images:ImageFolderDataModule",
            "datamodule_kwargs": {"root": f"{bucket}/images/digits-png", "generate": True, "batch_size": 64},
            "trainer": {"max_epochs": 1, "limit_train_batches": 6, "limit_val_batches": 2,
                        "num_sanity_val_steps": 0, "enable_progress_bar": False, "accelerator": "cpu",
                        **trainer},
            "checkpoint_root": f"{bucket}/images/checkpoints",
            "checkpoint": {"monitor": "val_acc", "mode": "max"},
            "mlflow": {"experiment_name": "e2e-images", "registered_model_name": "digits-images"},
        }
    ).model_dump(mode="json")  # fmt: skip


def test_the_image_example_runs_every_flow_through_the_served_deployments(stack: Stack) -> None:
    """Issue 11: a project's own data module (PNG files on S3, torchmetrics accuracy) through train,
    retrain, reproduce and predict, as deployments on the real Prefect server, MLflow server and S3."""
    import mlflow
    import pyarrow.parquet as pq

    first = _run("training/training", {"config": _images_config(stack.bucket)})
    assert first.prepared.kind == "datamodule" and first.champion
    assert first.prepared.fingerprint.objects == 1797  # every PNG listed, none read for the identity
    assert 0.0 <= first.validation_metrics["val_acc"] <= 1.0 and "test_acc" in first.test_metrics
    client = mlflow.MlflowClient(stack.mlflow.uri)
    run = client.get_run(first.mlflow_run_id)
    assert run.data.tags["data.fingerprint"] == first.prepared.fingerprint.digest

    better = _run("retraining/retraining", {"config": _images_config(stack.bucket, max_epochs=2,
                                                                        limit_train_batches=12),
                                            "metric": "test_acc", "mode": "max"})  # fmt: skip
    assert better.decision.promote, better.decision.reason
    assert better.champion_metrics is not None  # the champion was tested on the same images

    outcome = _run("reproduce/reproduce", {"run_id": first.mlflow_run_id})
    assert outcome.match and "exactly" in outcome.message, outcome.message

    output = stack.root / "image-predictions.parquet"
    scored = _run(
        "predict/predict",
        {"model_name": "digits-images", "source": None, "output_uri": str(output)},
    )
    assert scored.model == f"digits-images version {better.challenger.version} (champion)"
    table = pq.read_table(output)
    assert scored.rows == table.num_rows == 270  # the test split: one row per image
    assert set(table.column("prediction").to_pylist()) <= set(range(10))

    # the registered model takes raw uint8 images and predicts what the pipeline predicts, image by image
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from examples.images import ImageFolderDataModule

    # models:/ URIs resolve through the process-wide setting: set for this block only, so that later tests
    # never talk to this module's (by then stopped) server
    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(stack.mlflow.uri):
            served = mlflow.pyfunc.load_model("models:/digits-images@champion")
    finally:
        if env is not None:  # the helper unsets the variable on the way out; the module's fixture set it
            os.environ["MLFLOW_TRACKING_URI"] = env
    datamodule = ImageFolderDataModule(root=_images_config(stack.bucket)["datamodule_kwargs"]["root"])
    datamodule.setup("test")
    raw = datamodule.test_dataloader().dataset.tensors[0].numpy()  # the test split, in predict's order
    assert raw.dtype.name == "uint8" and raw.shape == (270, 8, 8)
    logits = served.predict(raw)
    assert (logits.argmax(axis=1) == table.column("prediction").to_numpy()).all()


def _triggered_runs(deployment_id: Any, partition: str) -> list[Any]:
    """The deployment's flow runs an automation created for ``partition``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return [
        r
        for r in runs
        if r.created_by is not None
        and r.created_by.type == "AUTOMATION"
        and r.parameters.get("partition") == partition
    ]


def test_a_data_landed_event_retrains_the_served_model_on_its_partition(stack: Stack) -> None:
    """Issue 13: the upstream stage reports partition P with ``emit_data_landed``; the served ``retraining``
    deployment's trigger starts a run on its own, which trains on P's data (the window is that day)."""
    import shutil

    import mlflow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    from flows.defaults import load_config
    from flows.retraining import RetrainingResult
    from tasks.events import emit_data_landed

    partition = "2024-05-01"
    landed = stack.root / "landed"
    (landed / f"date={partition}").mkdir(parents=True)
    shutil.copy(DIGITS_CSV, landed / f"date={partition}" / "digits.csv")
    # the trigger listens for the model of the config ``serve`` was given (the bundled example's)
    model_name = load_config().mlflow.registered_model_name
    assert model_name
    config = _e2e_config(
        stack.bucket,
        model_kwargs={"hidden": 32, "t_max": 2, "step_sleep": 0.0},
        data={"source": str(landed / "date={window_start}" / "digits.csv"), "target": "target"},
        trainer={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "num_sanity_val_steps": 0,
                 "enable_progress_bar": False, "accelerator": "cpu"},
        mlflow={"experiment_name": "e2e-events", "registered_model_name": model_name},
    ).model_dump(mode="json")  # fmt: skip
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retraining/retraining")
        # what an operator sets in the deployment's form: the config whose source names the window's day
        client.update_deployment(deployment.id, DeploymentUpdate(parameters={"config": config}))
        [automation] = client.read_resource_related_automations(f"prefect.deployment.{deployment.id}")
    try:
        emit_data_landed(model_name, partition, source=str(landed / f"date={partition}"))
        [flow_run] = wait_for(
            lambda: _triggered_runs(deployment.id, partition), 300, "a retraining run started by the event"
        )
        final = _wait_terminal(flow_run.id)
    finally:
        with get_client(sync_client=True) as client:
            client.update_deployment(deployment.id, DeploymentUpdate(parameters=deployment.parameters))
    assert final.state.type.value == "COMPLETED", final.state.message
    # started by the deployment's own trigger, not by a person or the schedule
    assert final.created_by.id == automation.id and final.parameters["partition"] == partition
    result = final.state.result()
    assert isinstance(result, RetrainingResult)
    trained_on = str(landed / f"date={partition}" / "digits.csv")
    assert result.source == trained_on
    run = mlflow.MlflowClient(stack.mlflow.uri).get_run(result.fit.mlflow_run_id)
    assert run.data.params["config.data.source"] == trained_on
    assert result.challenger.name == model_name and result.decision.promote  # the model's first version
