"""The start of an MLflow run: the server reachable, the experiment found or created, the run found by key."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from lightning_lib.loggers.mlflow._context import TAG_RUN_KEY
from lightning_lib.loggers.redact import redact_text

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)


def wait_until_reachable(uri: str, timeout: float) -> None:
    """Return once anything answers at an HTTP(S) tracking URI; raise a clear error after ``timeout``.

    Without this, a server that is down when the run starts makes MLflow's client retry each call for
    about four minutes before failing with a generic error. Any HTTP answer counts (an auth proxy's 401
    too): only "nothing there" is an error.
    """
    import requests

    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=max(0.5, min(5.0, timeout)))
            return
        except requests.RequestException as exc:
            error = exc
        if time.monotonic() + delay > deadline:
            raise ConnectionError(
                f"Expected an MLflow tracking server at {redact_text(uri)}, none answered within {timeout:g}s"
                f" ({redact_text(f'{type(error).__name__}: {error}')[:300]})."
            )
        time.sleep(delay)
        delay = min(2 * delay, 5.0)


def experiment_id_for(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of the live experiment called ``name``, created (at ``artifact_location``) if missing."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage != "deleted":
        return str(experiment.experiment_id)
    log.info("Experiment with name %s not found. Creating it.", name)
    try:
        return str(client.create_experiment(name=name, artifact_location=artifact_location))
    except MlflowException:  # another process created it in between
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def sqlite_artifact_location(uri: str) -> str | None:
    """``artifacts`` beside a SQLite store's file, for experiments created there: MLflow's own default is
    ``./mlruns`` under whatever the working directory happens to be. None for servers (they decide)."""
    if not uri.startswith("sqlite:///"):
        return None
    return os.path.join(os.path.dirname(os.path.abspath(uri[len("sqlite:///") :])), "artifacts")


def find_run_by_key(client: MlflowClient, experiment_id: str, run_key: str) -> Run | None:
    """The oldest live run of the experiment tagged ``run_key``, or None (the key's charset is checked
    by the logger, so it can be quoted as is)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{TAG_RUN_KEY} = '{run_key}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def recorded_steps(run: Run) -> dict[str, int]:
    """The last step each metric of ``run`` has recorded, from the run's latest values (no extra request).

    MLflow keeps, per metric, the value that is greatest by ``(step, timestamp, value)``: its step is the
    highest step recorded for that metric.
    """
    return {metric.key: int(metric.step) for metric in run.data.to_proto().metrics}
