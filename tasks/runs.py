"""A past MLflow run of the pipeline, read back: its config, code version, data digest and metrics.

``reproduce`` compares these with what would run now; ``retraining`` rebuilds the champion's config to
evaluate it exactly as it was trained.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from lightning_lib.loggers.mlflow import TAG_GIT_COMMIT, TAG_GIT_DIRTY, TAG_RUN_KEY, git_tags
from tasks.config import TrainConfig
from tasks.training import TAG_FINGERPRINT, TAG_INPUT_SHA256


class RunRecord(BaseModel):
    """What reproduction needs from a past run."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: str
    config: TrainConfig
    git_commit: str | None
    git_dirty: bool | None
    input_sha256: str | None  # the data's digest: the table's sha256, or the data module's fingerprint
    metrics: dict[str, float]
    status: str = "FINISHED"  # MLflow's: FINISHED, FAILED, KILLED, RUNNING, SCHEDULED


class CodeVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    git_commit: str | None
    git_dirty: bool | None


def _dirty(value: str | None) -> bool | None:
    return None if value is None else value == "true"


def read_run(tracking_uri: str, run_id: str) -> RunRecord:
    """Read the run; its ``config.*`` params must rebuild a valid ``TrainConfig`` (allowed prefixes too)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run: Any = MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            raise
        # a typo or another server's id: a lookup error (one line), not the server's stack trace
        raise LookupError(
            f"Expected the id of an MLflow run at {tracking_uri}, received {run_id!r}: no such run there."
        ) from None
    params = dict(run.data.params)
    if not any(name.startswith("config.") for name in params):
        raise LookupError(
            f"MLflow run {run_id} has no 'config.*' params: it was not started by this pipeline, so there "
            "is no configuration to reproduce it from."
        )
    tags = dict(run.data.tags)
    return RunRecord(
        run_id=run_id,
        experiment_id=str(run.info.experiment_id),
        config=TrainConfig.from_flat_params(params),
        git_commit=tags.get(TAG_GIT_COMMIT),
        git_dirty=_dirty(tags.get(TAG_GIT_DIRTY)),
        input_sha256=tags.get(TAG_INPUT_SHA256) or tags.get(TAG_FINGERPRINT),
        metrics=model_metrics(run.data.metrics),
        status=str(run.info.status),
    )


def current_code_version() -> CodeVersion:
    """The commit and dirty flag of the project in the working directory (as the logger tags them)."""
    tags = git_tags()
    return CodeVersion(git_commit=tags.get(TAG_GIT_COMMIT), git_dirty=_dirty(tags.get(TAG_GIT_DIRTY)))


# MLflow's system metrics (CPU, memory, GPU of the machine during the fit): never the same twice, so never
# part of what a reproduction compares
SYSTEM_METRICS_PREFIX = "system/"


def model_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The run's metrics without MLflow's system metrics."""
    return {k: float(v) for k, v in metrics.items() if not k.startswith(SYSTEM_METRICS_PREFIX)}


def run_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The model's metrics of run ``run_id`` (system metrics left out)."""
    from mlflow import MlflowClient

    return model_metrics(MlflowClient(tracking_uri).get_run(run_id).data.metrics)


class KeyedRun(BaseModel):
    """The MLflow run a run key already has: what a new fit of that key must agree with."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metric_names: list[str]


def _reachable(uri: str, timeout: float = 60.0) -> None:
    """Raise ``ConnectionError`` (transient: the task is retried) when nothing answers at an HTTP tracking
    URI within ``timeout``; MLflow's own client would retry each call for minutes first."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    from tasks.factory import without_userinfo

    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5)
            return
        except requests.RequestException as exc:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"Expected an MLflow tracking server at {without_userinfo(uri)}, none answered within "
                    f"{timeout:g}s ({type(exc).__name__}); the run key's MLflow run could not be looked up."
                ) from None
        time.sleep(delay)
        delay = min(2 * delay, 5.0)


def find_keyed_run(tracking_uri: str, experiment_name: str, run_key: str) -> KeyedRun | None:
    """The live MLflow run tagged ``run_key`` in the experiment (the one the logger would continue), or
    None; looks only, so a refused fit leaves MLflow as it was (no experiment, no SQLite file created)."""
    if tracking_uri.startswith("sqlite:///") and not os.path.exists(tracking_uri[len("sqlite:///") :]):
        return None
    _reachable(tracking_uri)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        return None
    runs: Any = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.{TAG_RUN_KEY} = '{run_key}'",  # the key's charset is [A-Za-z0-9_.-]
        max_results=1,
        order_by=["attributes.start_time ASC"],  # as the logger picks it
    )
    if not runs:
        return None
    run = runs[0]
    return KeyedRun(
        run_id=run.info.run_id,
        experiment_id=str(run.info.experiment_id),
        status=str(run.info.status),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        metric_names=sorted(model_metrics(run.data.metrics)),
    )


TAG_CRASHED_ATTEMPTS = "lightning_lib.crashed_attempts"
TAG_LAST_CRASH = "lightning_lib.last_crash"


def end_crashed_attempt(
    tracking_uri: str, experiment_name: str, run_key: str, ended_at: float, why: str
) -> str | None:
    """End the run key's MLflow run KILLED at ``ended_at`` (epoch seconds) when it is still RUNNING: the
    attempt that ran it died without ending it. Counts the crashes in a tag and says why in another;
    returns the run id, or None when there was nothing to end. A fit that resumes the run reopens it."""
    run = find_keyed_run(tracking_uri, experiment_name, run_key)
    if run is None or run.status != "RUNNING":
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    count = int(run.tags.get(TAG_CRASHED_ATTEMPTS, "0") or 0) + 1
    client.set_tag(run.run_id, TAG_CRASHED_ATTEMPTS, str(count))
    client.set_tag(run.run_id, TAG_LAST_CRASH, why)
    client.set_terminated(run.run_id, status="KILLED", end_time=int(ended_at * 1000))
    return run.run_id


def last_logged_step(tracking_uri: str, run: KeyedRun) -> int:
    """The highest step of any metric the run logged (-1 for none)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    return max(
        (m.step for name in run.metric_names for m in client.get_metric_history(run.run_id, name)),
        default=-1,
    )


__all__ = [
    "SYSTEM_METRICS_PREFIX",
    "TAG_CRASHED_ATTEMPTS",
    "TAG_LAST_CRASH",
    "CodeVersion",
    "KeyedRun",
    "RunRecord",
    "current_code_version",
    "end_crashed_attempt",
    "find_keyed_run",
    "last_logged_step",
    "model_metrics",
    "read_run",
    "run_metrics",
]
