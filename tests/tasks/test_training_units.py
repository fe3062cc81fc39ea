"""Unit tests of the training tasks' pieces: run keys, the loss guard, progress, retry decisions."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from lightning_lib.loggers.mlflow._run import sqlite_artifact_location as local_artifact_location
from tasks.config import TrainConfig
from tasks.factory import (
    FiniteLossGuard,
    NonFiniteLossError,
    build_datamodule,
    checkpoint_dir,
    without_userinfo,
)
from tasks.progress import PrefectProgress, fit_progress
from tasks.retry import is_transient
from tasks.run_key import config_digest, derive_run_key

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, **extra: Any) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": "examples.digits:DigitsClassifier",
            "data": {"source": str(REPO / "examples" / "data" / "digits.csv"), "target": "target"},
            "checkpoint_root": str(tmp_path / "ckpt"),
            **extra,
        }
    )


def test_run_key_is_the_configs_or_a_fresh_one_outside_prefect(tmp_path: Path) -> None:
    assert derive_run_key(_config(tmp_path, run_key="mine")) == "mine"
    one, two = derive_run_key(_config(tmp_path)), derive_run_key(_config(tmp_path))
    assert one != two and one.startswith("run-")


def test_config_digest_ignores_only_the_run_key(tmp_path: Path) -> None:
    base = config_digest(_config(tmp_path))
    assert config_digest(_config(tmp_path, run_key="x")) == base
    assert config_digest(_config(tmp_path, seed=1)) != base


@pytest.mark.usefixtures("prefect_harness")
def test_run_key_inside_a_flow_is_stable_across_a_subflow(tmp_path: Path) -> None:
    from prefect import flow
    from prefect.runtime import flow_run

    config = _config(tmp_path)

    @flow
    def child() -> str:
        return derive_run_key(config, "training")

    @flow
    def parent() -> tuple[str, str]:
        return str(flow_run.id), child()

    root_id, key = parent()
    assert key == f"training-{root_id}-{config_digest(config)}"


def test_finite_loss_guard_stops_at_nan_and_is_not_retried() -> None:
    guard = FiniteLossGuard()
    trainer = SimpleNamespace(global_step=7, current_epoch=1)
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(0.5)}, None, 0)
    with pytest.raises(NonFiniteLossError, match="global step 7") as info:
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(math.nan)}, None, 3)
    assert not is_transient(info.value)
    assert is_transient(ConnectionError("S3 went away"))


def test_fit_progress_uses_steps_then_epochs() -> None:
    assert (
        fit_progress(
            SimpleNamespace(estimated_stepping_batches=40, global_step=10, current_epoch=0, max_epochs=9)
        )
        == 25.0
    )
    by_epoch = SimpleNamespace(
        estimated_stepping_batches=math.inf, global_step=3, max_epochs=4, current_epoch=1
    )
    assert fit_progress(by_epoch) == 25.0


def _started_progress(
    monkeypatch: pytest.MonkeyPatch, update: Any, interval: float
) -> tuple[PrefectProgress, SimpleNamespace]:
    """A PrefectProgress whose artifact calls are ``update`` (and a stand-in create), started on a
    10-step fit."""
    import prefect.artifacts as artifacts

    monkeypatch.setattr(artifacts, "create_progress_artifact", lambda progress, **_: "artifact-1")
    monkeypatch.setattr(artifacts, "update_progress_artifact", update)
    progress = PrefectProgress(description="Training m-d", interval=interval)
    trainer = SimpleNamespace(estimated_stepping_batches=10, global_step=0, current_epoch=0, max_epochs=1)
    progress.on_train_start(trainer, None)
    return progress, trainer


def test_progress_artifact_is_posted_off_the_training_thread(monkeypatch: pytest.MonkeyPatch) -> None:

    posted: list[float] = []
    descriptions: list[str] = []

    def update(artifact_id: str, progress: float, description: str) -> None:
        posted.append(progress)
        descriptions.append(description)

    progress, trainer = _started_progress(monkeypatch, update, interval=0.01)
    assert progress.artifact_id == "artifact-1"
    trainer.global_step = 5
    progress.on_train_batch_end(trainer, None, None, None, 4)
    deadline = time.monotonic() + 5
    while 50.0 not in posted and time.monotonic() < deadline:
        time.sleep(0.01)
    progress.on_train_end(trainer, None)
    progress.wait()  # the fit task waits once Trainer.fit returned: the last post overlaps the fit's end
    assert 50.0 in posted and posted[-1] == 100.0
    # the run's Artifacts tab shows a card with the description's first line, not the value: it carries it
    assert "Training m-d: 50%" in descriptions and descriptions[-1] == "Training m-d: 100%"


def test_the_last_progress_post_does_not_hold_up_the_end_of_the_fit(monkeypatch: pytest.MonkeyPatch) -> None:

    release = threading.Event()
    posted: list[float] = []

    def slow_update(artifact_id: str, progress: float, description: str) -> None:
        release.wait(5)  # an API that answers slowly
        posted.append(progress)

    progress, trainer = _started_progress(monkeypatch, slow_update, interval=60.0)
    trainer.global_step = 10
    progress.on_train_end(trainer, None)  # returns while the post is still on its way
    assert posted == []
    release.set()
    progress.wait()
    assert posted == [100.0]


def test_evaluation_metric_names_are_what_mlflow_accepts() -> None:
    # log_run_metrics names the evaluation's metrics by the logger's own rule
    from lightning_lib.loggers.mlflow import clean_name as mlflow_metric_name

    assert mlflow_metric_name("val/acc") == "val/acc"
    assert mlflow_metric_name("val_acc@1") == "val_acc1"
    assert mlflow_metric_name("a//./b/") == "a/b"
    assert mlflow_metric_name("@") == "_"
    long = "x" * 300
    assert len(mlflow_metric_name(long)) == 250 and mlflow_metric_name(long) != mlflow_metric_name(long + "y")


def test_data_module_arguments_cannot_override_the_prepared_splits(tmp_path: Path) -> None:
    config = _config(tmp_path, datamodule_kwargs={"train_uri": "elsewhere.parquet"})
    with pytest.raises(ValueError, match="train_uri"):
        build_datamodule(config, prepared=SimpleNamespace(kind="table", datamodule_kwargs=dict))  # type: ignore[arg-type]


def test_checkpoint_dir_and_uris_without_credentials(tmp_path: Path) -> None:
    assert checkpoint_dir(_config(tmp_path), "k") == str(tmp_path / "ckpt" / "k")
    assert without_userinfo("http://user:secret@host:5000/x") == "http://host:5000/x"
    assert without_userinfo("s3://bucket/prefix") == "s3://bucket/prefix"


def test_experiments_of_a_sqlite_store_keep_their_artifacts_beside_it(tmp_path: Path) -> None:
    assert local_artifact_location(f"sqlite:///{tmp_path}/mlflow.db") == str(tmp_path / "artifacts")
    assert local_artifact_location("http://127.0.0.1:5000") is None


def test_a_model_with_a_preprocessing_data_module_is_not_logged_without_it(tmp_path: Path) -> None:
    from tasks.training import _example

    # the bundled table's data module standardises (a preprocessor hook): without the prepared data it
    # cannot be rebuilt, and the model alone would predict from raw rows something else than the pipeline
    with pytest.raises(
        ValueError, match=r"preprocessor \(examples.tabular:TabularDataModule\), received none"
    ):
        _example(_config(tmp_path), None, torch.nn.Linear(64, 10), str(tmp_path / "best.ckpt"))
