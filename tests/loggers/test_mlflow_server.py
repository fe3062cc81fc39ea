"""MLFlowLogger against a real ``mlflow server`` over HTTP, everything read back with ``MlflowClient``.

One server for the module (SQLite backend, artifacts proxied by the server to moto's S3 endpoint from
``tests/conftest.py``), stopped with its process group. Only the server process is told where the S3
endpoint is and which (dummy) credentials to use: clients reach artifacts through the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_lib as pl
from lightning_lib.callbacks import ModelCheckpoint
from lightning_lib.checkpoint import read_manifest
from lightning_lib.loggers import MLFlowLogger
from lightning_lib.loggers.mlflow._artifacts import dataset_spec
from lightning_lib.loggers.mlflow._checkpoints import sha256_file
from lightning_lib.loggers.mlflow._worker import RetryPolicy
from lightning_lib.storage import LocalStore
from tests.helpers import ClassifierDataModule, ClassifierModel, Crash, CrashAfter
from tests.services import MlflowServer, group_members

mlflow = pytest.importorskip("mlflow")
pytestmark = [
    pytest.mark.services,
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # the scrubbing warnings are expected here
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),  # mlflow on SQLAlchemy 2.1
]

REPO = Path(__file__).resolve().parents[2]
ENV_SECRET = "env-Secret-7Q2w9Z"
PARAM_SECRET = "param-Secret-K8d3Lp"
URL_PASSWORD = "urlPw-5Nc1Rt"
FAST_RETRY = RetryPolicy(initial=0.2, factor=2.0, maximum=1.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Any:
    endpoint = os.environ["AWS_ENDPOINT_URL"]  # moto's URL, set by the s3_endpoint fixture
    server_env = {
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test-server-key-id",  # dummies: moto accepts any
        "AWS_SECRET_ACCESS_KEY": "test-server-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # a prefix of its own: other tests share the session's bucket
    destination = f"{s3_endpoint}/mlflow/{uuid.uuid4().hex[:8]}"
    srv = MlflowServer(
        tmp_path_factory.mktemp("mlflow_server"), artifacts_destination=destination, env=server_env
    )
    srv.start()
    # uvicorn runs as a child of the `mlflow server` CLI: the group, not the pid, is what must be stopped
    assert srv.pgid is not None and len(group_members(srv.pgid)) >= 2
    yield srv
    pgid = srv.pgid
    srv.stop()
    assert not group_members(pgid)


def s3_objects(destination: str) -> dict[str, bytes]:
    """Every object under an ``s3://bucket/prefix`` destination, read straight from the endpoint."""
    import boto3

    bucket, _, prefix = destination.removeprefix("s3://").partition("/")
    s3 = boto3.session.Session().client("s3")
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
        for obj in page.get("Contents", [])
    ]
    return {key[len(prefix) + 1 :]: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


@pytest.fixture()
def client(server: MlflowServer) -> Any:
    return mlflow.MlflowClient(server.uri)


def make_logger(server: MlflowServer, **kwargs: Any) -> MLFlowLogger:
    kwargs.setdefault("run_key", f"test-{uuid.uuid4().hex[:12]}")
    return MLFlowLogger(tracking_uri=server.uri, experiment_name="integration", retry=FAST_RETRY, **kwargs)


def make_trainer(tmp_path: Path, logger: MLFlowLogger, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2, "num_sanity_val_steps": 0,
        "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
        "enable_checkpointing": False, "default_root_dir": str(tmp_path), "logger": logger,
    }  # fmt: skip
    options.update(kwargs)
    return pl.Trainer(**options)


def runs_with_key(client: Any, run_key: str) -> list[Any]:
    experiment = client.get_experiment_by_name("integration")
    return list(client.search_runs([experiment.experiment_id], filter_string=f"tags.run_key = '{run_key}'"))


def content_hash(path: str) -> str:
    """What a reference pins: a committed checkpoint's content sha256 (its commit marker's), a plain
    file's own sha256."""
    ckpt = read_manifest(LocalStore(os.path.dirname(path)), os.path.basename(path))
    return ckpt.sha256 if ckpt is not None else sha256_file(path)


class SecretModel(ClassifierModel):
    """A classifier whose hyper-parameters carry credentials, as careless configs do."""

    def __init__(self, api_key: str = PARAM_SECRET, note: str = ENV_SECRET, db: str = "") -> None:
        super().__init__()


def test_fit_records_everything_and_no_secret(
    server: MlflowServer, client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", ENV_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET + "aws")
    pl.seed_everything(7, verbose=False)
    logger = make_logger(
        server,
        tags={"team": "vision", "auth_token": PARAM_SECRET},
        log_model=True,
        registered_model_name="integration-model",
        registered_model_alias="champion",
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, logger, enable_checkpointing=True, callbacks=[checkpoint])
    model = SecretModel(db=f"postgresql://trainer:{URL_PASSWORD}@db:5432/features")
    datamodule = ClassifierDataModule()
    trainer.fit(model, datamodule)

    assert logger.delivery_report is not None and logger.delivery_report.ok, logger.delivery_report
    [run] = runs_with_key(client, logger.run_key or "")
    assert run.info.run_id == logger.run_id and run.info.status == "FINISHED"

    params = run.data.params
    assert params["lr"] == "0.01" and params["hidden"] == "64" and params["batch_size"] == "16"
    assert params["api_key"] == "***" and params["note"] == "***"
    assert params["db"] == "postgresql://trainer:***@db:5432/features"

    history = client.get_metric_history(run.info.run_id, "train_loss_step")
    assert [m.step for m in history] == list(range(8))
    assert [m.value for m in history] == pytest.approx(model.losses)
    epoch_history = client.get_metric_history(run.info.run_id, "train_loss_epoch")
    assert [m.step for m in epoch_history] == [3, 7]
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2

    tags = run.data.tags
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head and tags["git.dirty"] in ("true", "false")
    assert tags["lightning_lib.version"] == pl.__version__ and tags["torch.version"] == torch.__version__
    assert tags["python.version"].count(".") == 2 and tags["seed"] == "7"
    assert tags["run_key"] == logger.run_key and tags["team"] == "vision" and tags["auth_token"] == "***"
    assert tags["checkpoint.latest.sha256"] == content_hash(checkpoint.last_model_path)

    [dataset_input] = run.inputs.dataset_inputs
    expected = dataset_spec(datamodule.train_set)
    assert expected is not None
    assert (dataset_input.dataset.name, dataset_input.dataset.digest) == ("train", expected.digest)
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"

    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(tmp_path / "artifacts"), tracking_uri=server.uri
        )
    )
    assert (local / "plots" / "metric_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    references = json.loads((local / "checkpoints" / "references.json").read_text())["checkpoints"]
    latest = next(
        ref for ref in references if "latest" in ref["roles"] and ref["uri"] == checkpoint.last_model_path
    )
    assert latest["sha256"] == content_hash(checkpoint.last_model_path)
    assert not list((local / "checkpoints").glob("*.ckpt"))  # recorded by reference, not copied

    # The server proxied every artifact (clients only saw mlflow-artifacts:/ URIs) into the S3 bucket,
    # and what the server hands back is byte for byte what is stored there.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    objects = s3_objects(server.artifacts_destination)
    run_artifacts = f"{run.info.experiment_id}/{run.info.run_id}/artifacts/"
    for name in ("plots/metric_curves.png", "checkpoints/references.json"):
        assert objects[run_artifacts + name] == (local / name).read_bytes(), name
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)  # model URIs resolve through the global client
    model_id = logger.logged_model_info.model_id
    model_objects = {key.rsplit("/", 1)[-1]: blob for key, blob in objects.items() if f"/{model_id}/" in key}
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_id}", dst_path=str(tmp_path / "model")
        )
    )
    assert model_objects["MLmodel"] == (model_dir / "MLmodel").read_bytes()
    assert {"conda.yaml", "requirements.txt", "input_example.json"} <= set(model_objects)
    assert any(name.endswith((".pt2", ".pth")) for name in model_objects)  # the weights

    version = client.get_model_version_by_alias("integration-model", "champion")
    assert version.version == str(logger.logged_model_info.registered_model_version)
    loaded = mlflow.pytorch.load_model("models:/integration-model@champion")
    x = torch.randn(5, 32)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)

    # Found nowhere: not in the server's database (params, tags, inputs, logged-model records) nor in
    # any artifact it stored, nor in the local artifact copy.
    stored = [server.root / "mlflow.db", *local.rglob("*")]
    blobs = [p.read_bytes() for p in stored if p.is_file()] + list(
        s3_objects(server.artifacts_destination).values()
    )
    assert len(blobs) > 5
    for secret in (ENV_SECRET, PARAM_SECRET, URL_PASSWORD):
        assert not any(secret.encode() in blob for blob in blobs), secret


class FailingModel(ClassifierModel):
    def __init__(self, error: str = "runtime") -> None:
        super().__init__()
        self.error = error

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step == 2:
            raise KeyboardInterrupt() if self.error == "interrupt" else RuntimeError("boom")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(("error", "status"), [("runtime", "FAILED"), ("interrupt", "KILLED")])
def test_a_failing_run_ends_failed_or_killed(
    server: MlflowServer, client: Any, tmp_path: Path, error: str, status: str
) -> None:
    # log_model="all": every committed checkpoint is recorded by reference as it is saved
    logger = make_logger(server, log_model="all")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    trainer = make_trainer(tmp_path, logger, enable_checkpointing=True, callbacks=[checkpoint])
    # Ctrl-C: Lightning shuts down (the run ends KILLED) and exits with status 1
    with pytest.raises(SystemExit if error == "interrupt" else RuntimeError):
        trainer.fit(FailingModel(error), ClassifierDataModule())
    [run] = runs_with_key(client, logger.run_key or "")
    assert run.info.status == status
    expected = "KeyboardInterrupt" if error == "interrupt" else "RuntimeError: boom"
    assert run.data.tags["lightning_lib.exception"].startswith(expected)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss_step")] == [0, 1]
    saved = sorted(str(p) for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert len(saved) == 2 and run.data.tags["checkpoint.latest.uri"] == saved[-1]
    assert run.data.tags["checkpoint.latest.sha256"] == content_hash(saved[-1])
    local = client.download_artifacts(run.info.run_id, "checkpoints/references.json", str(tmp_path))
    references = json.loads(Path(local).read_text())["checkpoints"]
    assert sorted(ref["uri"] for ref in references) == saved
    assert all(ref["sha256"] == content_hash(ref["uri"]) and ref["step"] > 0 for ref in references)
    assert logger.logged_model_info is None  # a failed run logs no model


def test_a_resumed_run_continues_the_same_mlflow_run(
    server: MlflowServer, client: Any, tmp_path: Path
) -> None:
    run_key = f"resume-{uuid.uuid4().hex[:8]}"
    ckpt_dir = tmp_path / "ckpt"
    first = make_logger(server, run_key=run_key)
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]
    make_trainer(tmp_path, first, max_epochs=1, enable_checkpointing=True, callbacks=callbacks).fit(
        ClassifierModel(), ClassifierDataModule()
    )
    second = make_logger(server, run_key=run_key)
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]
    make_trainer(tmp_path, second, max_epochs=2, enable_checkpointing=True, callbacks=callbacks).fit(
        ClassifierModel(), ClassifierDataModule(), ckpt_path=str(ckpt_dir / "last.ckpt")
    )
    assert second.run_id == first.run_id
    [run] = runs_with_key(client, run_key)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss_step")]
    assert steps == list(range(8))  # no gap, no second copy


def test_a_fit_resumed_after_a_crash_sends_no_step_twice(
    server: MlflowServer, client: Any, tmp_path: Path
) -> None:
    """The steps a resumed fit replays (the end of epoch 0 among them) reach the server once."""
    run_key = f"replay-{uuid.uuid4().hex[:8]}"
    ckpt_dir = tmp_path / "ckpt"

    def fit(crash_at: int | None) -> None:
        pl.seed_everything(3)
        # a checkpoint at steps 3 and 6 only (no last.ckpt, which validation would save at step 4)
        callbacks: list[Any] = [ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=3, save_top_k=-1)]
        if crash_at is not None:
            callbacks.append(CrashAfter(crash_at))
        trainer = make_trainer(
            tmp_path, make_logger(server, run_key=run_key), enable_checkpointing=True, callbacks=callbacks
        )
        trainer.fit(ClassifierModel(), ClassifierDataModule(), ckpt_path=None if crash_at else "last")
        assert crash_at or (trainer.ckpt_path and "step=3" in trainer.ckpt_path)

    with pytest.raises(Crash):
        fit(crash_at=5)  # after epoch 0 (steps 0-3, validated at 3) and step 4: resumed from step 3
    [run] = runs_with_key(client, run_key)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [3]
    fit(crash_at=None)
    [run] = runs_with_key(client, run_key)
    for key, steps in (
        ("train_loss_step", list(range(8))),
        ("val_loss", [3, 7]),
        ("train_loss_epoch", [3, 7]),
    ):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == steps, key


SIGTERM_SCRIPT = """
import pathlib, sys, time
import lightning_lib as pl
from lightning_lib.loggers import MLFlowLogger
from tests.helpers import ClassifierDataModule, ClassifierModel

uri, ready, run_key = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]

class Pace(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 3:
            ready.write_text("ready")
        time.sleep(0.02)

logger = MLFlowLogger(tracking_uri=uri, experiment_name="integration", run_key=run_key)
trainer = pl.Trainer(max_epochs=10_000, logger=logger, callbacks=[Pace()], enable_progress_bar=False,
                     enable_checkpointing=False, log_every_n_steps=1, default_root_dir=str(ready.parent))
trainer.fit(ClassifierModel(), ClassifierDataModule())
"""


def test_sigterm_ends_the_run_killed(server: MlflowServer, client: Any, tmp_path: Path) -> None:
    script, ready = tmp_path / "train.py", tmp_path / "ready"
    script.write_text(SIGTERM_SCRIPT)
    run_key = f"sigterm-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, str(script), server.uri, str(ready), run_key],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=120)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output
    [run] = runs_with_key(client, run_key)
    assert run.info.status == "KILLED", output
    assert len(client.get_metric_history(run.info.run_id, "train_loss_step")) >= 3  # logged before SIGTERM


class RestartServer(pl.Callback):
    """Stops the server after step 2 and starts it again on a thread while training goes on."""

    def __init__(self, server: MlflowServer) -> None:
        self.server = server
        self.thread: threading.Thread | None = None

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == 2 and self.thread is None:
            trainer.logger.flush(wait=True, timeout=30)  # steps 0-1 are in; the rest meet a dead server
            self.server.stop()
            self.thread = threading.Thread(target=self.server.start)
            self.thread.start()


def test_server_stopped_mid_training(server: MlflowServer, client: Any, tmp_path: Path) -> None:
    logger = make_logger(server, finalize_timeout=120)
    restart = RestartServer(server)
    start = time.monotonic()
    trainer = make_trainer(tmp_path, logger, limit_train_batches=16, callbacks=[restart])
    trainer.fit(ClassifierModel(), ClassifierDataModule())
    assert restart.thread is not None
    restart.thread.join()
    assert server.healthy() and time.monotonic() - start < 120
    report = logger.delivery_report
    assert report is not None and report.ok, report.summary() if report else None
    assert report.last_error  # the outage was seen
    history = client.get_metric_history(logger.run_id, "train_loss_step")
    assert trainer.global_step == 32 and [m.step for m in history] == list(range(32))
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_default_store_and_lightning_properties(
    tmp_path: Path, server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logger = MLFlowLogger(
        save_dir=str(tmp_path / "mlruns"), prefix="fit", synchronous=True, log_metric_curves=False
    )
    assert logger.tracking_uri == f"sqlite:///{tmp_path / 'mlruns'}/mlflow.db" and logger.save_dir == str(
        tmp_path / "mlruns"
    )
    assert logger.name == logger.experiment_id and logger.version == logger.run_id
    logger.log_hyperparams({"model": {"depth": 3, "widths": [1, 2]}})
    logger.log_metrics({"loss": 0.5, "bad name!": 1.0, "skip": "text"}, step=3)  # type: ignore[dict-item]
    logger.log_dataset("features", "0123abcd" * 8, "s3://bucket/features.parquet", schema={"columns": ["a"]})
    logger.flush(wait=True, timeout=30)
    run = logger.experiment.get_run(logger.run_id)
    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("features", ("0123abcd" * 8)[:36], "s3")
    assert json.loads(dataset.schema) == {"columns": ["a"]}
    assert run.data.params == {"model/depth": "3", "model/widths": "[1, 2]"}
    assert run.data.metrics == {"fit-loss": 0.5, "fit-bad name": 1.0}
    logger.finalize("success")
    run = logger.experiment.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith(
        str(tmp_path / "mlruns" / "artifacts")
    )
    continued = MLFlowLogger(save_dir=str(tmp_path / "mlruns"), run_id=logger.run_id)
    assert continued.run_id == logger.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    assert MLFlowLogger().tracking_uri == server.uri and MLFlowLogger().save_dir is None
